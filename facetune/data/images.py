"""Decode any face image file to the 48x48 grayscale layout of the Kaggle CSV.

Shared by ingest (UTKFace folders) and predict, so a face is converted the same way everywhere.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

SIZE = 48
NUM_PIXELS = SIZE * SIZE


class ImageDecodeError(ValueError):
    """An image file that cannot be decoded; `reason` is a short human explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def to_gray48(image: Image.Image) -> np.ndarray:
    """Convert a PIL image to a (48, 48) uint8 gray array: convert("L"), then a Lanczos resize.

    This is how the Kaggle CSV was made from the UTKFace JPEGs, so both inputs agree.
    """
    gray = image.convert("L")
    if gray.size != (SIZE, SIZE):
        gray = gray.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.uint8).reshape(SIZE, SIZE)


def load_gray48(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as a (48, 48) uint8 gray array, or raise ImageDecodeError with the reason."""
    try:
        with Image.open(path) as image:
            # Image.open only reads the header; load() decodes every byte so truncation shows up here.
            image.load()
            return to_gray48(image)
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image") from None
    except OSError as err:
        message = str(err)
        # PIL words truncation differently per codec and per where the data stops.
        if "truncat" in message.lower() or "broken data stream" in message:
            raise ImageDecodeError("truncated image") from None
        raise ImageDecodeError(f"unreadable image ({message})") from None
    except (ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(f"unreadable image ({err})") from None
