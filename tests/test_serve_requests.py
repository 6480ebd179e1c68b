"""What POST /predict accepts, and how it refuses the rest (facetune.serve.uploads, no Ray)."""
from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
from PIL import Image

from facetune.data.images import ImageDecodeError, load_gray48, to_gray48
from facetune.serve import uploads
from facetune.serve.detection import faces_in
from facetune.serve.uploads import BadRequest
from serve_fixture import face_photo, many_field_form, multipart, png_bomb, rgb_png


def refusal(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(BadRequest) as caught:
        result = call(*args, **kwargs)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    return caught.value.status, caught.value.kind


async def stream(*chunks: bytes):
    for chunk in chunks:
        yield chunk


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png; charset=binary", "application/octet-stream",
                                          "multipart/form-data; boundary=x", "IMAGE/WEBP"])
def test_image_and_form_content_types_are_accepted(content_type):
    assert uploads.check_content_type(content_type)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "", None])
def test_other_content_types_are_refused_with_415(content_type):
    assert refusal(uploads.check_content_type, content_type) == (415, "unsupported_type")


def test_body_over_the_cap_is_refused_but_read_to_the_end_so_the_client_gets_the_answer():
    read = []

    async def counted(*chunks):
        for chunk in chunks:
            read.append(len(chunk))
            yield chunk

    assert asyncio.run(uploads.read_capped(stream(b"ab", b"cd"), limit=4)) == b"abcd"
    assert refusal(uploads.read_capped, counted(b"abc", b"def", b"ghi"), limit=4, drain_limit=100) == (413, "too_large")
    assert sum(read) == 9  # drained, not cut
    read.clear()
    assert refusal(uploads.read_capped, counted(*[b"x" * 10] * 50), limit=4, drain_limit=25)[0] == 413
    assert sum(read) == 30  # past drain_limit: stop reading


def test_declared_length_far_over_the_cap_is_refused_before_reading():
    uploads.check_declared_length(None)
    uploads.check_declared_length(str(uploads.MAX_BODY_BYTES + 1))  # read (and drained), then refused
    assert refusal(uploads.check_declared_length, str(uploads.DRAIN_BYTES + 1)) == (413, "too_large")
    assert refusal(uploads.check_declared_length, "lots") == (400, "bad_length")


def test_raw_body_and_form_file_give_the_same_bytes():
    data = rgb_png()
    assert uploads.extract_upload(data, "image/png").data == data
    body, content_type = multipart("image", "photo.png", data, "image/png")
    upload = uploads.extract_upload(body, content_type)
    assert upload.data == data and upload.filename == "photo.png"


@pytest.mark.parametrize(
    "body, content_type, expected",
    [
        (b"", "image/jpeg", (400, "empty_body")),
        (multipart("file", "empty.jpg", b"")[0], multipart("file", "empty.jpg", b"")[1], (400, "empty_body")),
        (multipart("note", None, b"hello", "text/plain")[0], "multipart/form-data; boundary=facetune-test-boundary",
         (400, "bad_multipart")),
        (b"--x\r\n", "multipart/form-data", (400, "bad_multipart")),
    ],
)
def test_empty_and_malformed_uploads_are_refused_with_400(body, content_type, expected):
    assert refusal(uploads.extract_upload, body, content_type) == expected


def test_non_images_truncated_images_and_decompression_bombs_are_refused(tmp_path):
    photo = face_photo(tmp_path / "face.jpg").read_bytes()
    assert uploads.decode_image(photo).size == (320, 240)
    assert refusal(uploads.decode_image, b"GIF89a but not really") == (422, "not_an_image")
    assert refusal(uploads.decode_image, photo[: len(photo) // 3]) == (422, "not_an_image")
    assert refusal(uploads.decode_image, png_bomb()) == (422, "too_many_pixels")
    assert refusal(uploads.decode_image, rgb_png((300, 300)), max_pixels=80_000) == (422, "too_many_pixels")


def test_a_small_crop_is_one_face_converted_exactly_as_facetune_predict_does(tmp_path):
    path = tmp_path / "crop.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    [face] = faces_in(uploads.decode_image(path.read_bytes()))
    assert face.box == (0, 0, 64, 64) and face.score is None
    np.testing.assert_array_equal(to_gray48(Image.fromarray(face.crop)), load_gray48(path))


def test_faces_in_a_photo_are_the_ones_predict_finds(tmp_path):
    import skimage.data

    from facetune.predict.face_detection import find_faces

    path = tmp_path / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    served = faces_in(uploads.decode_image(path.read_bytes()))
    found = find_faces(skimage.data.astronaut(), "auto")
    assert [f.box for f in served] == [tuple(int(v) for v in f.box) for f in found] and len(served) == 1
    np.testing.assert_array_equal(served[0].crop, found[0].region)

# ------------------------------------------------------------------------------ hostile uploads (issue 38)


def test_a_form_with_50000_parts_is_refused_before_it_is_parsed():
    body, content_type = many_field_form(50_000, rgb_png())
    assert len(body) > 2_500_000
    started = time.perf_counter()
    assert refusal(uploads.read_request, body, content_type) == (400, "too_many_parts")
    assert time.perf_counter() - started < 0.5  # the stdlib parser needs seconds for these parts
    small, content_type = many_field_form(uploads.MAX_FORM_PARTS - 1, rgb_png())
    assert uploads.extract_upload(small, content_type).filename == "face.png"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("image, reason", [
    (Image.new("L", (1, 1), 128), "image too small"),
    (Image.new("RGB", (64, 64), (255, 255, 255)), "image too uniform"),
    (Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "image too uniform"),
], ids=["1x1", "blank", "transparent"])
def test_what_predict_rejects_the_service_refuses_with_422_and_the_same_reason(image, reason, tmp_path):
    path = tmp_path / "input.png"
    image.save(path)
    with pytest.raises(ImageDecodeError) as rejected:
        load_gray48(path)  # what `facetune predict` does with the file
    with pytest.raises(BadRequest) as refused:
        uploads.read_request(path.read_bytes(), "image/png")
    assert (refused.value.status, refused.value.kind) == (422, "not_a_face")
    assert refused.value.reason == rejected.value.reason and refused.value.reason.startswith(reason)


def test_a_jpeg_too_short_for_the_size_it_claims_is_refused_as_truncated():
    buffer = io.BytesIO()
    Image.new("L", (7000, 7000), 100).save(buffer, "JPEG")
    body = buffer.getvalue()[:2400] + b"\xff\xd9"  # closed with an end marker, 2.4 KB for 49 M pixels
    with pytest.raises(BadRequest) as refused:
        uploads.read_request(body, "image/jpeg")
    assert (refused.value.status, refused.value.kind, refused.value.reason) == (422, "not_an_image", "truncated image")


def test_a_one_bit_png_over_the_pixel_cap_is_refused_from_its_header():
    body = _png(Image.new("1", (7000, 7000)))
    assert len(body) < 50_000
    assert refusal(uploads.read_request, body, "image/png") == (422, "too_many_pixels")


def test_boxes_of_a_jpeg_decoded_at_reduced_size_are_in_the_files_pixels(tmp_path):
    small = face_photo(tmp_path / "face.jpg")  # 320x240, the face in the middle
    buffer = io.BytesIO()
    Image.open(small).resize((4800, 3600), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=90)
    _, decoded, faces = uploads.read_request(buffer.getvalue(), "image/jpeg")
    assert decoded.size == (4800, 3600) and decoded.scale == 2 and decoded.image.size == (2400, 1800)
    x, y, width, height = faces[0].box  # the largest
    assert abs(x + width / 2 - 2400) < 300 and abs(y + height / 2 - 1800) < 300 and width > 1000
