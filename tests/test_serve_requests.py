"""What POST /predict accepts, and how it refuses the rest (facetune.serve.uploads, no Ray)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image

from facetune.data.images import load_gray48
from facetune.serve import uploads
from facetune.serve.faces import faces_in
from facetune.serve.uploads import BadRequest
from serve_fixture import face_photo, multipart, png_bomb, rgb_png


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
    with pytest.warns(Image.DecompressionBombWarning):  # PIL's own notice on opening; the refusal is ours
        assert refusal(uploads.decode_image, png_bomb()) == (422, "too_many_pixels")
    assert refusal(uploads.decode_image, rgb_png((300, 300)), max_pixels=80_000) == (422, "too_many_pixels")


def test_a_small_crop_is_one_face_converted_exactly_as_facetune_predict_does(tmp_path):
    path = tmp_path / "crop.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    [face] = faces_in(uploads.decode_image(path.read_bytes()))
    assert face.box == (0, 0, 64, 64) and face.score is None
    np.testing.assert_array_equal(face.crop, load_gray48(path))


def test_faces_in_a_photo_are_the_ones_predict_finds(tmp_path):
    import skimage.data

    from facetune.predict.faces import find_faces

    path = tmp_path / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    served = faces_in(uploads.decode_image(path.read_bytes()))
    found = find_faces(skimage.data.astronaut(), "auto")
    assert [f.box for f in served] == [tuple(int(v) for v in f.box) for f in found] and len(served) == 1
    np.testing.assert_array_equal(served[0].crop, found[0].crop48)