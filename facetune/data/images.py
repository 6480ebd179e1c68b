"""Decode any face image file to a face layout (an InputSpec; by default the Kaggle CSV's gray one).

The one decoding path of facetune: prepare (UTKFace folders, `load_face`) and predict
(`load_gray48`) convert a face the same way everywhere. On top of the Kaggle conversion
(convert("L") or convert("RGB"), then a Lanczos resize) it makes unusual files mean what they show:

- EXIF orientation is applied, so a phone photo stored sideways goes in upright;
- 16-bit and 32-bit integer images are scaled to 0..255 (not clipped to white), float images
  are read as 0..1 (or as 0..255 when their values go above 1);
- transparency is composited onto BACKGROUND (white), as an image viewer shows it;
- images smaller than MIN_SIDE pixels, or so uniform (pixel standard deviation below
  MIN_PIXEL_STD after conversion) that they cannot hold a face, are rejected with a reason;
- no image costs more than MAX_PIXELS decoded pixels: JPEGs far larger than a face needs are
  decoded at 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling, PIL's draft mode), anything else over
  the cap is refused from its header, before a pixel is decoded; truncated files are refused.

`open_image` is the one door: `facetune predict` (files), the Python API and `facetune serve`
(request bodies) all decode through it, so they refuse the same images with the same reasons.
"""
from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facetune.data.walk import NOT_A_REGULAR_FILE
from facetune.records import DEFAULT_INPUT_SPEC, InputSpec

#: Gray level that transparent pixels are composited onto.
BACKGROUND = 255
#: Smallest width/height accepted: below this an upscaled "face" is mostly interpolation.
MIN_SIDE = 16
#: Real faces have a pixel standard deviation of 12 or more at 48x48 (lowest in UTKFace: 12.4);
#: blank, all-black or fully transparent images have (almost) none.
MIN_PIXEL_STD = 4.0
#: Most pixels decoded from one image: 4096x4096. Decoding, flattening and the RGB copy the
#: detector searches take ~18 bytes a pixel at worst (RGBA), so one image stays under ~300 MB.
MAX_PIXELS = 4096 * 4096
#: JPEGs at least twice this long (either side) are decoded at reduced size, down to no less
#: than this: photos are searched for faces at 1024 px (facetune.predict.face_detection.DETECT_MAX_SIDE)
#: and faces cut from at least twice that resolution.
DRAFT_MIN_SIDE = 2048
#: A complete Huffman-coded JPEG (baseline or progressive: all JPEGs in practice) spends at least
#: one bit on every 8x8 block of its first component; a file shorter than that ends early, even
#: when it closes with an end marker (libjpeg then fills the rest with gray, silently).
JPEG_MIN_BITS_PER_BLOCK = 1
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")

# PIL warns (on stderr) about images over Image.MAX_IMAGE_PIXELS (89 M) as it opens them, and
# refuses those over twice that. MAX_PIXELS is below both, so every image PIL would warn about
# is refused here anyway, with a one-line reason: the raw warning would only add noise.
_QUIET_BOMBS = ("ignore", None, Image.DecompressionBombWarning, None, 0)


def _quiet_bomb_warnings() -> None:
    """Install the filter (again): a catch_warnings() block, pytest's included, drops it on exit."""
    if _QUIET_BOMBS not in warnings.filters:
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageDecodeError(ValueError):
    """An image that cannot be used as a face; `reason` is a short human explanation and `kind`
    its class: "not_an_image" (unreadable, truncated), "too_many_pixels" or "not_a_face"."""

    def __init__(self, reason: str, kind: str = "not_an_image") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass(frozen=True)
class Decoded:
    """A decoded image, `scale` times smaller than the `size` (width, height) its file stores
    (1, or 2, 4, 8 for a JPEG decoded in draft mode): file pixels = decoded pixels * scale."""

    image: Image.Image
    size: tuple[int, int]
    scale: int = 1


def to_face(image: Image.Image, spec: InputSpec = DEFAULT_INPUT_SPEC) -> np.ndarray:
    """Convert a PIL image to a spec.shape (channels, size, size) uint8 array (orientation, depth
    and alpha handled).

    For an ordinary 8-bit opaque image this is convert("L") (or "RGB"), then a Lanczos resize:
    how the Kaggle CSV was made from the UTKFace JPEGs, so both inputs agree.
    """
    flat = _flattened(_upright(image))
    converted = flat.convert("RGB" if spec.is_color else "L")
    if converted.size != (spec.size, spec.size):
        converted = converted.resize((spec.size, spec.size), Image.Resampling.LANCZOS)
    array = np.asarray(converted, dtype=np.uint8)
    # Channel-first, as the models take it: (S, S, 3) -> (3, S, S); gray (S, S) -> (1, S, S).
    return np.ascontiguousarray(array.transpose(2, 0, 1)) if spec.is_color else array.reshape(spec.shape)


def to_gray48(image: Image.Image) -> np.ndarray:
    """Convert a PIL image to a (48, 48) uint8 gray array: to_face in the default layout."""
    return to_face(image, DEFAULT_INPUT_SPEC).reshape(DEFAULT_INPUT_SPEC.size, DEFAULT_INPUT_SPEC.size)


def face_problem(width: int, height: int, gray48: np.ndarray | None = None) -> str | None:
    """Why an image of this size (and, when given, these 48x48 pixels) is not a face; None if it may be."""
    if min(width, height) < MIN_SIDE:
        return f"image too small ({width}x{height}, need at least {MIN_SIDE}x{MIN_SIDE})"
    if gray48 is not None:
        spread = float(np.asarray(gray48, dtype=np.float32).std())
        if spread < MIN_PIXEL_STD:
            return f"image too uniform to be a face (pixel standard deviation {spread:.1f} < {MIN_PIXEL_STD:g})"
    return None


def uniform_rows(pixels: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Boolean mask of (N, P) uint8 rows too uniform to be a face (the MIN_PIXEL_STD rule)."""
    mask = np.zeros(len(pixels), dtype=bool)
    for start in range(0, len(pixels), chunk):
        mask[start : start + chunk] = pixels[start : start + chunk].astype(np.float32).std(axis=1) < MIN_PIXEL_STD
    return mask


def too_many_pixels(width: int, height: int, max_pixels: int = MAX_PIXELS) -> str:
    return f"too many pixels ({width}x{height} = {width * height}, the limit is {max_pixels})"


def header_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(width, height) from an image file's header, None for anything open_image would refuse to open."""
    _quiet_bomb_warnings()
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with Image.open(path) as image:
            return image.size
    except Exception:  # noqa: BLE001 - unreadable files are refused, with their reason, when decoded
        return None


def open_image(source: str | os.PathLike[str] | bytes, max_pixels: int = MAX_PIXELS) -> Decoded:
    """Decode an image file (a path) or an upload (bytes) within MAX_PIXELS, or raise ImageDecodeError.

    Only the header is read before the checks (size, pixel cap, a JPEG too short for its size),
    so a refused image costs next to nothing; a large JPEG is decoded at reduced size.
    """
    _quiet_bomb_warnings()
    try:
        if not isinstance(source, bytes) and not stat.S_ISREG(os.stat(source).st_mode):
            # Opening a FIFO blocks until a writer comes; a device may never end.
            raise ImageDecodeError("is a folder, not an image file" if os.path.isdir(source) else NOT_A_REGULAR_FILE)
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image") from None
    except Image.DecompressionBombError:
        raise ImageDecodeError(f"too many pixels (over twice PIL's limit, the limit is {max_pixels})",
                               "too_many_pixels") from None
    except OSError as err:
        raise ImageDecodeError(f"unreadable image ({err.strerror or err})") from None
    try:
        return _decode(image, len(source) if isinstance(source, bytes) else os.path.getsize(source), max_pixels)
    except ImageDecodeError:
        image.close()
        raise
    except OSError as err:
        image.close()
        message = str(err)
        # PIL words truncation differently per codec and per where the data stops.
        if "truncat" in message.lower() or "broken data stream" in message:
            raise ImageDecodeError("truncated image") from None
        raise ImageDecodeError(f"unreadable image ({err.strerror or message})") from None
    except (ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        image.close()
        raise ImageDecodeError(f"unreadable image ({err})") from None


def _decode(image: Image.Image, file_bytes: int, max_pixels: int) -> Decoded:
    size = width, height = image.size
    problem = face_problem(width, height)
    if problem is not None:
        raise ImageDecodeError(problem, "not_a_face")
    scale = 1
    if image.format == "JPEG":
        blocks = -(-width // 8) * -(-height // 8)
        if file_bytes * 8 < blocks * JPEG_MIN_BITS_PER_BLOCK:
            raise ImageDecodeError("truncated image")
        if max(size) >= 2 * DRAFT_MIN_SIDE:
            shrink = DRAFT_MIN_SIDE / max(size)
            image.draft(image.mode, (max(1, int(width * shrink)), max(1, int(height * shrink))))
            scale = round(width / image.size[0])  # the decoded side is rounded up: 4097 / 2 -> 2049
    if image.size[0] * image.size[1] > max_pixels:
        raise ImageDecodeError(too_many_pixels(width, height, max_pixels), "too_many_pixels")
    # Image.open read only the header; load() decodes every byte, so truncation shows up here.
    image.load()
    return Decoded(image, size, scale)


def load_face(path: str | os.PathLike[str], spec: InputSpec = DEFAULT_INPUT_SPEC) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file as (the face in `spec`'s layout, spec.shape uint8; the face in the default
    gray layout, (48, 48) uint8), or raise ImageDecodeError with the reason.

    The default-layout face decides whether the image is a face and is what prepare hashes and
    splits by, so a file is accepted, and lands in a split, alike at every size and colour.
    """
    faces = load_faces(path, (spec, DEFAULT_INPUT_SPEC))
    return faces[spec], faces[DEFAULT_INPUT_SPEC].reshape(DEFAULT_INPUT_SPEC.size, DEFAULT_INPUT_SPEC.size)


def load_faces(path: str | os.PathLike[str], specs: Sequence[InputSpec]) -> dict[InputSpec, np.ndarray]:
    """Read an image file as its face in each of `specs` (spec -> spec.shape uint8), each converted
    from the decoded pixels (never one layout from another), or raise ImageDecodeError.

    Whether the image is a face is decided on the default-layout face, as in load_face."""
    decoded = open_image(path)
    try:
        gray = to_gray48(decoded.image)
        faces = {spec: gray.reshape(spec.shape) if spec == DEFAULT_INPUT_SPEC else to_face(decoded.image, spec)
                 for spec in dict.fromkeys(specs)}
    except (OSError, ValueError) as err:  # a mode PIL decodes but cannot convert
        raise ImageDecodeError(f"unreadable image ({err})") from None
    finally:
        decoded.image.close()
    problem = face_problem(*decoded.size, gray)
    if problem is not None:
        raise ImageDecodeError(problem, "not_a_face")
    return faces


def converted_faces(pixels: np.ndarray, source: InputSpec, target: InputSpec) -> np.ndarray:
    """(N, source.pixels) uint8 faces -> (N, target.pixels), each through to_face: a gray face given
    to a colour layout has its one channel replicated (PIL's L -> RGB), a colour one given to gray
    is converted as prepare converts (PIL's luma), sides are Lanczos-resized. Unchanged when equal."""
    if source == target:
        return np.asarray(pixels, np.uint8).reshape(len(pixels), target.pixels)
    out = np.empty((len(pixels), target.pixels), np.uint8)
    for row, face in enumerate(np.asarray(pixels, np.uint8).reshape(-1, *source.shape)):
        out[row] = to_face(face_image(face), target).reshape(-1)
    return out


def face_image(face: np.ndarray) -> Image.Image:
    """A PIL image of one face: (C, S, S) channel-first (C 1 or 3), (S, S) gray or (H, W, 3) RGB uint8."""
    array = np.asarray(face, np.uint8)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[2] not in (1, 3):
        array = array.transpose(1, 2, 0)  # channel-first -> channel-last
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(array), "L" if array.ndim == 2 else "RGB")


def load_gray48(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as a (48, 48) uint8 gray array, or raise ImageDecodeError with the reason."""
    return load_face(path)[1]


def resized_faces(pixels: np.ndarray, source: InputSpec, target: InputSpec) -> np.ndarray:
    """(N, source.pixels) uint8 gray faces -> (N, target.pixels), each resized with Lanczos (a smaller
    gray layout from the Kaggle CSV's faces)."""
    if source.is_color or target.is_color:
        raise ValueError("resized_faces converts gray faces to gray faces only")
    out = np.empty((len(pixels), target.pixels), np.uint8)
    for row, face in enumerate(np.asarray(pixels, np.uint8).reshape(-1, source.size, source.size)):
        small = Image.fromarray(face, "L").resize((target.size, target.size), Image.Resampling.LANCZOS)
        out[row] = np.asarray(small, np.uint8).reshape(-1)
    return out


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (unchanged when it has none or it is unreadable)."""
    try:
        return ImageOps.exif_transpose(image)
    except (ValueError, TypeError, OSError, SyntaxError):
        return image  # a damaged EXIF block: the pixels are still usable as stored


def _flattened(image: Image.Image) -> Image.Image:
    """An 8-bit image without alpha: deep images scaled to gray, transparency composited onto BACKGROUND."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        return Image.fromarray(_scale_to_8bit(image), "L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (BACKGROUND, BACKGROUND, BACKGROUND, 255))
        return Image.alpha_composite(backdrop, rgba).convert("RGB")
    return image


def upright_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded image as the training decoder sees it (EXIF orientation
    applied, deep images scaled, transparency on BACKGROUND): what face detection searches."""
    return np.asarray(_flattened(_upright(image)).convert("RGB"))


def _scale_to_8bit(image: Image.Image) -> np.ndarray:
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    top = float(finite.max()) if finite.size else 0.0
    if image.mode == "F":
        scale = 255.0 if top <= 1.0 else 1.0  # floats in 0..1 are the common convention
    elif image.mode in _SIXTEEN_BIT_MODES or top > 255:
        scale = 255.0 / 65535.0
    else:
        scale = 1.0  # a 32-bit integer image holding 8-bit values
    scaled = np.nan_to_num(values * scale, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
