"""Turn an HTTP upload (raw image bytes or a multipart form) into a decoded image and its faces,
or refuse it.

Every refusal is a `BadRequest` with an HTTP status, a short `kind` (what /health counts) and a
reason a person can act on. Nothing here touches Ray, so the rules are testable on their own.
"""
from __future__ import annotations

import email.message
import email.parser
import email.policy
from dataclasses import dataclass
from typing import AsyncIterator

from facetune.data.images import MAX_PIXELS, Decoded, ImageDecodeError, open_image
from facetune.detectors import DEFAULT_DETECTOR, Detector
from facetune.serve.detection import Face, faces_in

#: Largest request body accepted; phone photos are a few MB, so this leaves room without
#: letting one client make a replica hold hundreds of MB.
MAX_BODY_BYTES = 10 * 1024 * 1024
#: An over-limit body is read (and discarded) up to this size so its sender gets the 413;
#: past it the connection is simply cut.
DRAIN_BYTES = 64 * 1024 * 1024
#: Most parts a multipart form may have. The page sends one (the file); the stdlib MIME parser
#: spends ~0.2 ms a part, so 50,000 tiny fields would hold a thread for seconds. Counted on the
#: raw bytes (a C-speed search) before anything is parsed.
MAX_FORM_PARTS = 16
#: Content types a POST /predict body may have.
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
MULTIPART = "multipart/form-data"


class BadRequest(Exception):
    """A request the service refuses: answered with `status` and {"error": kind, "reason": reason}."""

    def __init__(self, status: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.kind = kind
        self.reason = reason

    def as_json(self) -> dict[str, str]:
        return {"error": self.kind, "reason": self.reason}


@dataclass(frozen=True)
class Upload:
    """The image bytes of a request and what the client called them."""

    data: bytes
    filename: str | None = None


def check_content_type(content_type: str | None) -> str:
    """The media type (lower case, no parameters), or BadRequest 415 for one /predict does not take."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == MULTIPART or any(media.startswith(prefix) for prefix in RAW_IMAGE_TYPES):
        return media
    shown = media or "none"
    raise BadRequest(
        415, "unsupported_type",
        f"content type {shown!r} not accepted: send image bytes (image/*, application/octet-stream) "
        f"or a {MULTIPART} form with one file",
    )


def check_declared_length(content_length: str | None, drain_limit: int = DRAIN_BYTES) -> None:
    """Refuse at once a body whose Content-Length is past what is worth reading to the end."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise BadRequest(400, "bad_length", f"Content-Length {content_length!r} is not a number") from None
    if declared > drain_limit:
        raise BadRequest(413, "too_large", f"body of {declared} bytes is far over the {MAX_BODY_BYTES}-byte limit")


async def read_capped(
    chunks: AsyncIterator[bytes], limit: int = MAX_BODY_BYTES, drain_limit: int = DRAIN_BYTES
) -> bytes:
    """Read a streamed body; past `limit` bytes raise BadRequest 413 (Content-Length may be absent
    or wrong, so the cap is enforced on the bytes themselves).

    An over-limit body is still read, and thrown away, up to `drain_limit`: a server that answers
    while the client is still sending closes the connection under it, and the client sees a reset
    instead of the 413 and its reason. Nothing past `limit` is kept in memory.
    """
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
        elif size > drain_limit:
            break
    if size > limit:
        raise BadRequest(413, "too_large", f"body of {size if size <= drain_limit else 'over ' + str(drain_limit)} "
                                           f"bytes is over the {limit}-byte limit")
    return b"".join(parts)


def extract_upload(body: bytes, content_type: str) -> Upload:
    """The image bytes of a checked body: the body itself, or the first file part of a form."""
    if not body:
        raise BadRequest(400, "empty_body", "the request body is empty: send an image")
    if check_content_type(content_type) != MULTIPART:
        return Upload(body)
    header = email.message.Message()
    header["Content-Type"] = content_type
    boundary = header.get_boundary()
    if not boundary:
        raise BadRequest(400, "bad_multipart", "multipart/form-data without a boundary")
    # Every part starts with a delimiter line; the form's end is one more.
    if body.count(b"--" + boundary.encode("latin-1")) > MAX_FORM_PARTS + 1:
        raise BadRequest(400, "too_many_parts", f"the form has more than {MAX_FORM_PARTS} parts: send one file")
    # The stdlib MIME parser reads form-data given the header line the body came with.
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise BadRequest(400, "bad_multipart", "could not read the multipart form")
    for part in message.iter_parts():
        if part.get_filename() is not None or part.get_param("name", header="content-disposition") in ("file", "image"):
            data = part.get_payload(decode=True) or b""
            if not data:
                raise BadRequest(400, "empty_body", "the uploaded file is empty: send an image")
            return Upload(data, part.get_filename())
    raise BadRequest(400, "bad_multipart", "the form has no file part (name it 'file')")


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Decoded:
    """Decode image bytes as `facetune predict` decodes files (facetune.data.images.open_image),
    refusing with 422 and its reason what it refuses: non-images, truncated files, too many pixels."""
    try:
        return open_image(data, max_pixels)
    except ImageDecodeError as err:
        raise refusal(err) from None


def refusal(err: ImageDecodeError) -> BadRequest:
    """The 422 for an image `facetune predict` rejects: the same reason, its kind for /health."""
    return BadRequest(422, err.kind, err.reason)


def read_request(body: bytes, content_type: str, detector: Detector = DEFAULT_DETECTOR) -> tuple[Upload, Decoded, list[Face]]:
    """A read body's upload, its decoded image and its faces; BadRequest for what is refused.

    Blocking work (form parsing, decoding, detection): the service runs it in a thread.
    """
    upload = extract_upload(body, content_type)
    decoded = decode_image(upload.data)
    try:
        return upload, decoded, faces_in(decoded, detector)
    except ImageDecodeError as err:  # taken whole, but too uniform to be a face
        raise refusal(err) from None
    finally:
        decoded.image.close()
