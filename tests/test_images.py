"""facetune.data.images: any image file -> 48x48 uint8 gray, with clear decode errors."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facetune.data.images import ImageDecodeError, load_gray48, to_gray48


def _jpeg_bytes(size: tuple[int, int] = (64, 64)) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_to_gray48_is_convert_L_then_lanczos_resize():
    rgb = Image.open(io.BytesIO(_jpeg_bytes()))
    expected = np.asarray(rgb.convert("L").resize((48, 48), Image.Resampling.LANCZOS))
    result = to_gray48(rgb)
    assert result.shape == (48, 48) and result.dtype == np.uint8
    np.testing.assert_array_equal(result, expected)


def test_load_gray48_reads_gray_png_of_any_size(tmp_path):
    path = tmp_path / "face.png"
    Image.fromarray(np.tile(np.arange(100, dtype=np.uint8) * 2, (80, 1)), "L").save(path)
    result = load_gray48(path)
    assert result.shape == (48, 48) and result.dtype == np.uint8
    assert result[:, 0].max() < 20 and result[:, -1].min() > 180  # the left-to-right ramp survives


def test_truncated_jpeg_is_reported_as_truncated(tmp_path):
    path = tmp_path / "cut.jpg"
    data = _jpeg_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError) as err:
        load_gray48(path)
    assert err.value.reason == "truncated image"


def test_text_file_named_jpg_is_not_an_image(tmp_path):
    path = tmp_path / "note.jpg"
    path.write_text("this is not a picture")
    with pytest.raises(ImageDecodeError) as err:
        load_gray48(path)
    assert err.value.reason == "not an image"
    assert isinstance(err.value, ValueError)
