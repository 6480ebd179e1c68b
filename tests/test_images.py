"""facetune.data.images: any image file -> 48x48 uint8 gray, with clear decode errors."""
from __future__ import annotations

import io
import os
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from facetune.data.images import (
    BACKGROUND,
    DRAFT_MIN_SIDE,
    MAX_PIXELS,
    ImageDecodeError,
    load_face,
    load_faces,
    load_gray48,
    open_image,
    to_gray48,
)
from facetune.data.walk import NOT_A_REGULAR_FILE


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


# ------------------------------------------------------------------ unusual files (issue 11)


def _face(size: int = 64) -> np.ndarray:
    """A gray image with structure: bright on the left half, a gradient down the right half."""
    image = np.zeros((size, size), np.uint8)
    image[:, : size // 2] = 200
    image[:, size // 2 :] = np.linspace(20, 120, size, dtype=np.uint8)[:, None]
    return image


def test_exif_orientation_is_applied(tmp_path):
    upright = Image.fromarray(_face(), "L").convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # how a sideways phone photo is stored
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to display
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright.save(tmp_path / "upright.jpg", quality=95)
    stored.save(tmp_path / "sideways.jpg", quality=95)  # the same pixels, no orientation tag
    upright_gray = load_gray48(tmp_path / "upright.jpg").astype(int)
    assert np.abs(load_gray48(tmp_path / "phone.jpg") - upright_gray).mean() < 3
    assert np.abs(load_gray48(tmp_path / "sideways.jpg") - upright_gray).mean() > 30


def test_16_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    eight = _face()
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    Image.fromarray(eight, "L").save(tmp_path / "plain.png")
    np.testing.assert_array_equal(load_gray48(tmp_path / "deep.png"), load_gray48(tmp_path / "plain.png"))


def test_float_image_in_unit_range_is_scaled_to_0_255(tmp_path):
    Image.fromarray(_face().astype(np.float32) / 255.0, "F").save(tmp_path / "float.tiff")
    Image.fromarray(_face(), "L").save(tmp_path / "plain.png")
    difference = np.abs(load_gray48(tmp_path / "float.tiff").astype(int) - load_gray48(tmp_path / "plain.png"))
    assert difference.max() <= 1


def test_transparency_is_composited_onto_the_white_background(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[:, :32] = (0, 0, 0, 255)  # opaque black left half
    rgba[:, 32:] = (0, 0, 0, 0)  # transparent right half, black underneath
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    gray = load_gray48(tmp_path / "cutout.png")
    assert gray[:, :20].max() < 10 and gray[:, 28:].min() == BACKGROUND


def test_palette_transparency_is_composited_too(tmp_path):
    image = Image.fromarray(_face(), "L").convert("P")
    image.info["transparency"] = int(np.asarray(image)[0, 0])
    image.save(tmp_path / "palette.png", transparency=image.info["transparency"])
    gray = load_gray48(tmp_path / "palette.png")
    assert gray[:, :20].min() == BACKGROUND  # the left half was the transparent index


@pytest.mark.parametrize(
    "image, reason",
    [
        (Image.new("L", (1, 1), 128), r"image too small \(1x1, need at least 16x16\)"),
        (Image.new("RGB", (8, 200), (90, 90, 90)), r"image too small \(8x200"),
        (Image.new("RGB", (64, 64), (0, 0, 0)), r"image too uniform to be a face \(pixel standard deviation 0\.0"),
        (Image.new("RGBA", (64, 64), (0, 0, 0, 0)), r"image too uniform"),
        (Image.new("L", (200, 200), 255), r"image too uniform"),
    ],
    ids=["1x1", "thin", "all-black", "transparent", "white"],
)
def test_images_that_cannot_hold_a_face_are_rejected_with_a_reason(image, reason, tmp_path):
    image.save(tmp_path / "x.png")
    with pytest.raises(ImageDecodeError, match=reason):
        load_gray48(tmp_path / "x.png")


def test_a_folder_named_like_an_image_is_rejected_not_crashed_on(tmp_path):
    (tmp_path / "face.jpg").mkdir()
    with pytest.raises(ImageDecodeError):
        load_gray48(tmp_path / "face.jpg")


def test_prepare_and_predict_decode_through_the_same_function():
    import facetune.data.ingest as ingest
    import facetune.predict.inputs as inputs

    # Prepare decodes with load_face, predict with load_faces: load_face's conversion for every spec.
    assert ingest.load_face is load_face
    assert inputs.load_faces is load_faces


# ------------------------------------------------------------ what decoding one image may cost (issue 38)


def _solid_jpeg(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 100).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_a_jpeg_far_larger_than_a_face_needs_is_decoded_at_reduced_size():
    decoded = open_image(_solid_jpeg((4 * DRAFT_MIN_SIDE, 2 * DRAFT_MIN_SIDE)))
    assert decoded.size == (4 * DRAFT_MIN_SIDE, 2 * DRAFT_MIN_SIDE)  # what the file stores
    assert decoded.scale == 4 and decoded.image.size == (DRAFT_MIN_SIDE, DRAFT_MIN_SIDE // 2)


def test_a_jpeg_whose_header_claims_more_than_its_bytes_can_hold_is_truncated():
    # 2.4 KB closed with an end marker: libjpeg would fill the missing 7000x7000 with gray.
    short = _solid_jpeg((7000, 7000))[:2400] + b"\xff\xd9"
    with pytest.raises(ImageDecodeError, match="^truncated image$"):
        open_image(short)


def test_an_image_over_the_pixel_cap_is_refused_from_its_header(tmp_path):
    path = tmp_path / "bitmap.png"
    Image.new("1", (7000, 7000)).save(path)  # ~6 KB on disk, 49 M pixels decoded
    assert path.stat().st_size < 50_000
    with pytest.raises(ImageDecodeError, match=r"^too many pixels \(7000x7000 = 49000000, the limit is \d+\)") as caught:
        load_gray48(path)
    assert caught.value.kind == "too_many_pixels"
    assert 7000 * 7000 > MAX_PIXELS


def test_a_decompression_bomb_is_refused_without_pils_raw_warning(tmp_path):
    from serve_fixture import png_bomb

    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(12_000))  # 144 M pixels: over PIL's warning threshold (89 M)
    with warnings.catch_warnings(record=True) as caught:
        with pytest.raises(ImageDecodeError, match="^too many pixels"):
            load_gray48(path)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


@pytest.mark.timeout(20)  # before the fix, opening the FIFO waited for a writer forever
def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageDecodeError, match=f"^{re.escape(NOT_A_REGULAR_FILE)}$"):
        load_gray48(fifo)
