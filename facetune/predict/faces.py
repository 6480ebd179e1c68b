"""The same faces in every layout the answering models take (issue 40: each model its own spec).

A Predictor may hold models of different InputSpecs (one per task from a sweep, or an ensemble
whose members differ), so faces are kept as the source gives them (a decoded file, a photo's
crop at its native resolution, a table's rows) until they are converted, once per spec, for the
models that take that spec. Every conversion is facetune.data.images.to_face, the one prepare
uses: a colour face given to a gray model becomes gray as prepare makes it; a gray face (a CSV
row, a gray prepared folder, a gray file) given to a colour model has its channel replicated
three times (PIL's L -> RGB), so it is answered rather than refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from facetune.data.images import converted_faces, face_image, to_face
from facetune.data.loading import pixels_to_images
from facetune.records import COLOR_CHANNELS, InputSpec


@dataclass(frozen=True)
class Faces:
    """N faces in one or more layouts: spec -> (N, spec.pixels) uint8, row i the same face in each."""

    layouts: Mapping[InputSpec, np.ndarray]

    def __post_init__(self) -> None:
        if not self.layouts:
            raise ValueError("Faces needs at least one layout")
        counts = {len(a) for a in self.layouts.values()}
        if len(counts) != 1:
            raise ValueError(f"Faces layouts hold different numbers of faces: {sorted(counts)}")

    def __len__(self) -> int:
        return len(next(iter(self.layouts.values())))

    @property
    def specs(self) -> tuple[InputSpec, ...]:
        return tuple(self.layouts)

    def select(self, rows: np.ndarray | slice) -> Faces:
        """The faces at `rows` (a boolean mask, indices or a slice), in every layout."""
        return Faces({spec: pixels[rows] for spec, pixels in self.layouts.items()})

    def images(self, spec: InputSpec) -> torch.Tensor:
        """(N, *spec.shape) float32 in [0, 1]: the training conversion of the faces in `spec`.

        A layout not held is converted from the first one held (a table's rows); decoded files and
        photos are given every layout their models take, each from the original pixels."""
        pixels = self.layouts.get(spec)
        if pixels is None:
            source = next(iter(self.layouts))
            pixels = converted_faces(self.layouts[source], source, spec)
        return torch.from_numpy(pixels_to_images(np.asarray(pixels).reshape(len(pixels), -1), spec))

    @classmethod
    def from_pixels(cls, pixels: np.ndarray, spec: InputSpec, specs: Sequence[InputSpec] = ()) -> Faces:
        """Rows of uint8 faces in `spec`'s layout, also converted to each of `specs`."""
        rows = np.asarray(pixels, np.uint8).reshape(len(pixels), spec.pixels)
        return cls({spec: rows, **{s: converted_faces(rows, spec, s) for s in specs if s != spec}})

    @classmethod
    def from_images(cls, images: Sequence[np.ndarray], specs: Sequence[InputSpec]) -> Faces:
        """Face images of any size, (H, W) gray or (H, W, 3) RGB uint8 (a photo's crop at its native
        resolution), each converted to every one of `specs`."""
        if not specs:
            raise ValueError("Faces.from_images needs at least one layout")
        pil = [face_image(image) for image in images]
        return cls({spec: np.stack([to_face(image, spec).reshape(-1) for image in pil]) if pil
                    else np.zeros((0, spec.pixels), np.uint8) for spec in specs})


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, S, S) floats in [0, 1] -> (N, C*S*S) uint8, rounded (for a conversion to another spec)."""
    return np.rint(images.detach().cpu().float().numpy() * 255.0).clip(0, 255).astype(np.uint8).reshape(len(images), -1)


def images_in(images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """(N, C, S, S) float faces in [0, 1] as a model of `spec` takes them: unchanged when they are in
    that layout already, else converted through uint8 with to_face (e.g. the CGAN's gray faces for
    a colour age regressor)."""
    if spec_of_array(images) == spec:
        return images
    return Faces.from_pixels(to_uint8(images), spec_of_array(images)).images(spec).to(images.device)


def spec_of_array(array: np.ndarray) -> InputSpec:
    """The layout an array of faces is in, from its shape: (N, S, S) or (N, 1, S, S) gray, (N, 3, S, S)
    colour, (N, P) gray when P = S*S and colour when P = 3*S*S (never both: 3 is not a square).
    A shape that is none of these raises ValueError naming it."""
    shape = np.shape(array)
    try:
        if len(shape) == 3 and shape[1] == shape[2]:
            return InputSpec.gray(int(shape[1]))
        if len(shape) == 4 and shape[2] == shape[3] and shape[1] in (1, COLOR_CHANNELS):
            return InputSpec(int(shape[2]), int(shape[1]))
        if len(shape) == 2:
            for channels in (1, COLOR_CHANNELS):
                side = int(round((shape[1] / channels) ** 0.5))
                if channels * side * side == shape[1]:
                    return InputSpec(side, channels)
    except ValueError:  # a side out of InputSpec's range
        pass
    raise ValueError(f"faces must be (N, S, S), (N, C, S, S) with C 1 or 3, or (N, C*S*S) flat, got {shape}")
