"""A `facetune serve` process for tests: started in its own session on a free port, stopped by
its process id, and everything it started (Ray's daemons and workers) checked gone afterwards.

Ray workers get process groups of their own but stay in the session of the process that
started Ray, so the session id is what finds every one of them.
"""
from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facetune.cluster.local_head import free_ports

REPO = Path(__file__).resolve().parent.parent


def session_members(sid: int) -> list[int]:
    """Live processes (not zombies) whose session id is `sid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                # Fields after the parenthesised command: state, ppid, pgrp, session, ...
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry))
    return members


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class ServeProcess:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, path: str, data: bytes | None = None, content_type: str | None = None,
                method: str | None = None, timeout: float = 60) -> Response:
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if content_type is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Response(resp.status, resp.read(), dict(resp.headers))
        except urllib.error.HTTPError as err:
            return Response(err.code, err.read(), dict(err.headers))

    def stop(self, grace_s: float = 40) -> list[int]:
        """SIGINT (the command shuts Serve and Ray down), then SIGKILL for whatever is left in
        the session. Returns the members that had to be killed."""
        sid = self.process.pid
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.5)
        leftover = session_members(sid)
        for pid in leftover:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.wait(timeout=10)
        return leftover


def start_serve(models: Path, log: Path, extra: list[str] | None = None, ready_s: float = 300) -> ServeProcess:
    """Run `facetune serve --models MODELS` on a free port; return once GET /health answers.

    Start-up takes ~20 s on two quiet cores; `ready_s` is generous because Ray's start-up
    stretches to minutes when the cores are shared with other jobs. Ray gives its raylet a fixed
    30 s to register, which a saturated machine can miss; and another process may take the port
    before the proxy binds it. Each of those failures is retried once, on a new port.
    """
    for attempt in (1, 2):
        try:
            return _start_once(models, log, extra, ready_s)
        except (RayStartTimeout, PortTaken):
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class RayStartTimeout(RuntimeError):
    pass


class PortTaken(RuntimeError):
    """Something other than an HTTP server answered on the chosen port."""


def _start_once(models: Path, log: Path, extra: list[str] | None, ready_s: float) -> ServeProcess:
    # A port Ray never draws for itself: a CI run once got a gRPC answer on /health.
    [port] = free_ports(1)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", RAY_ADDRESS="")
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "facetune.cli", "serve", "--models", str(models), "--port", str(port),
             "--replicas", "1", "--replica-cpus", "0.5", *(extra or [])],
            stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=log.parent,
        )
    server = ServeProcess(process, port, log)
    deadline = time.monotonic() + ready_s
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = log.read_text()
                error = (RayStartTimeout if "timed out during startup" in output
                         else PortTaken if "cannot listen on" in output else RuntimeError)  # taken before the bind
                raise error(f"facetune serve exited with {process.returncode}:\n{output[-3000:]}")
            try:
                if server.request("/health", timeout=5).status == 200:
                    return server
            except OSError:  # not listening yet, or closed without an answer (RemoteDisconnected)
                pass
            except http.client.HTTPException as err:
                raise PortTaken(f"port {port} answers, but not in HTTP ({type(err).__name__}): "
                                "another process holds it") from err
            time.sleep(0.5)
        raise RuntimeError(f"facetune serve not ready after {ready_s}s:\n{log.read_text()[-3000:]}")
    except BaseException:
        server.stop()
        raise


def face_photo(path: Path, size: tuple[int, int] = (320, 240), seed: int = 0) -> Path:
    """A colour JPEG of a drawn face (not a real person): skin-toned oval, eyes, mouth, noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.new("RGB", size, (70, 110, 150))
    draw = ImageDraw.Draw(image)
    cx, cy, rx, ry = width // 2, height // 2, width // 5, height // 3
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=(224, 180, 150))
    for ex in (cx - rx // 2, cx + rx // 2):
        draw.ellipse((ex - 9, cy - ry // 3 - 5, ex + 9, cy - ry // 3 + 5), fill=(40, 30, 30))
    draw.arc((cx - rx // 2, cy + ry // 4, cx + rx // 2, cy + ry // 2 + 10), 10, 170, fill=(150, 60, 60), width=4)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-6, 7, (height, width, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def png_bomb(side: int = 12_000) -> bytes:
    """A valid gray PNG of side x side zeros: ~150 KB on the wire, 144 Mpixels once decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def multipart(field: str, filename: str | None, data: bytes, content_type: str = "image/jpeg") -> tuple[bytes, str]:
    """(body, Content-Type header) of a form with one part (a file when it has a filename)."""
    boundary = "facetune-test-boundary"
    name = f'name="{field}"' + (f'; filename="{filename}"' if filename is not None else "")
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; {name}\r\n"
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def many_field_form(fields: int, file: bytes) -> tuple[bytes, str]:
    """A form of `fields` one-byte text fields, then one file part (the shape of a parser stall)."""
    boundary = "facetune-test-boundary"
    field = f'--{boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n'.encode()
    body, content_type = multipart("file", "face.png", file, "image/png")
    return field * fields + body, content_type


def rgb_png(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 80, 40)).save(buffer, "PNG")
    return buffer.getvalue()
