"""Decode any face image file to the 48x48 grayscale layout of the Kaggle CSV.

The one decoding path of facetune: prepare (UTKFace folders) and predict both call
`load_gray48`, so a face is converted the same way everywhere. On top of the Kaggle conversion
(convert("L"), then a Lanczos resize) it makes unusual files mean what they show:

- EXIF orientation is applied, so a phone photo stored sideways goes in upright;
- 16-bit and 32-bit integer images are scaled to 0..255 (not clipped to white), float images
  are read as 0..1 (or as 0..255 when their values go above 1);
- transparency is composited onto BACKGROUND (white), as an image viewer shows it;
- images smaller than MIN_SIDE pixels, or so uniform (pixel standard deviation below
  MIN_PIXEL_STD after conversion) that they cannot hold a face, are rejected with a reason.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facetune.schema import IMAGE_SIZE

#: Gray level that transparent pixels are composited onto.
BACKGROUND = 255
#: Smallest width/height accepted: below this an upscaled "face" is mostly interpolation.
MIN_SIDE = 16
#: Real faces have a pixel standard deviation of 12 or more at 48x48 (lowest in UTKFace: 12.4);
#: blank, all-black or fully transparent images have (almost) none.
MIN_PIXEL_STD = 4.0
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageDecodeError(ValueError):
    """An image file that cannot be used as a face; `reason` is a short human explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def to_gray48(image: Image.Image) -> np.ndarray:
    """Convert a PIL image to a (48, 48) uint8 gray array (orientation, depth and alpha handled).

    For an ordinary 8-bit opaque image this is convert("L"), then a Lanczos resize: how the
    Kaggle CSV was made from the UTKFace JPEGs, so both inputs agree.
    """
    gray = _to_gray8(_upright(image))
    if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
        gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


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
    """Boolean mask of (N, 2304) uint8 rows too uniform to be a face (the MIN_PIXEL_STD rule)."""
    mask = np.zeros(len(pixels), dtype=bool)
    for start in range(0, len(pixels), chunk):
        mask[start : start + chunk] = pixels[start : start + chunk].astype(np.float32).std(axis=1) < MIN_PIXEL_STD
    return mask


def load_gray48(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as a (48, 48) uint8 gray array, or raise ImageDecodeError with the reason."""
    try:
        with Image.open(path) as image:
            # Image.open only reads the header; load() decodes every byte so truncation shows up here.
            image.load()
            problem = face_problem(*image.size)
            if problem is None:
                gray = to_gray48(image)
                problem = face_problem(*image.size, gray)
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image") from None
    except IsADirectoryError:
        raise ImageDecodeError("is a folder, not an image file") from None
    except OSError as err:
        message = str(err)
        # PIL words truncation differently per codec and per where the data stops.
        if "truncat" in message.lower() or "broken data stream" in message:
            raise ImageDecodeError("truncated image") from None
        raise ImageDecodeError(f"unreadable image ({err.strerror or message})") from None
    except (ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(f"unreadable image ({err})") from None
    if problem is not None:
        raise ImageDecodeError(problem)
    return gray


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


def _to_gray8(image: Image.Image) -> Image.Image:
    """An 8-bit gray ("L") image: deep images scaled, transparency composited onto BACKGROUND."""
    return _flattened(image).convert("L")


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
