"""Benchmark: what hostile inputs cost the service and the CLI (issue 38's "Measure and show").

    python bench/hardening.py [--runs 3] [--burst 8] [--skip-serve] [--skip-cli]

Service (a private local Ray instance, the facetune Serve app with one replica and the shipped
models, on a free loopback port): for each hostile request, /health is asked again and again
while that request is in flight; printed are the median over --runs of the slowest /health
answer, and the request's own status. Then the replica's RSS (from /proc) before, at the peak of,
and 3 s after a burst of --burst concurrent pixel bombs, and of --burst of the largest image it
accepts. CLI: the peak RSS of `facetune predict` (a subprocess, ru_maxrss) on the largest images
it accepts and on a 12000x12000 PNG bomb, against a 64x64 crop, and whether PIL's
DecompressionBombWarning reached stderr. Everything started is shut down by its own handle.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # runnable from a checkout without installing
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the hostile inputs the tests use

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from facetune.data.images import MAX_PIXELS  # noqa: E402
from serve_fixture import face_photo, many_field_form, png_bomb, rgb_png  # noqa: E402

REPLICA_TITLE = b"ServeReplica:facetune:FaceService"


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def largest_png(noise: bool = True) -> bytes:
    """An RGBA PNG of exactly MAX_PIXELS, the costliest image either side accepts: noise (67 MB,
    for the CLI), or the drawn face scaled up (small enough for a request body)."""
    side = int(MAX_PIXELS ** 0.5)
    if noise:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 4), dtype=np.uint8), "RGBA")
    else:
        image = Image.open(face_photo(Path(tempfile.mkdtemp()) / "face.jpg")).resize((side, side)).convert("RGBA")
    return encoded(image, "PNG", compress_level=1 if noise else 6)


def huge_jpeg() -> bytes:
    """A 12000x9000 JPEG of the drawn face: decoded at 1/4 size."""
    small = face_photo(Path(tempfile.mkdtemp()) / "face.jpg")
    return encoded(Image.open(small).resize((12_000, 9_000)), "JPEG", quality=85)


def hostile_requests() -> list[tuple[str, bytes, str]]:
    short_jpeg = encoded(Image.new("L", (7000, 7000), 100), "JPEG")[:2400] + b"\xff\xd9"
    return [
        ("50,000-part form (3.7 MB)", *many_field_form(50_000, rgb_png())),
        ("140,000-part form (10 MB)", *many_field_form(140_000, rgb_png())),
        ("50 MB body", b"\xff" * (50 * 1024 * 1024), "image/jpeg"),
        ("7000x7000 1-bit PNG", encoded(Image.new("1", (7000, 7000)), "PNG"), "image/png"),
        ("12000x12000 PNG bomb", png_bomb(12_000), "image/png"),
        ("2.4 KB JPEG claiming 7000x7000", short_jpeg, "image/jpeg"),
        ("1x1 PNG", rgb_png((1, 1)), "image/png"),
        ("blank 64x64", rgb_png((64, 64)), "image/png"),
        ("transparent 64x64", encoded(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "PNG"), "image/png"),
        (f"largest accepted ({int(MAX_PIXELS ** 0.5)}^2 RGBA PNG)", largest_png(noise=False), "image/png"),
        ("12000x9000 JPEG (drafted to 1/4)", huge_jpeg(), "image/jpeg"),
    ]


def post(url: str, body: bytes | None = None, content_type: str | None = None) -> int:
    request = urllib.request.Request(url, data=body)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return -1  # connection cut (a body past the drain limit)


def health_while(base: str, body: bytes, content_type: str) -> tuple[float, int, float]:
    """(slowest /health in s, the request's status, its own seconds) with the request in flight."""
    with ThreadPoolExecutor(1) as pool:
        started = time.perf_counter()
        answer = pool.submit(post, base + "/predict", body, content_type)
        waits = []
        while not answer.done() or not waits:
            asked = time.perf_counter()
            post(base + "/health")
            waits.append(time.perf_counter() - asked)
        return max(waits), answer.result(), time.perf_counter() - started


def replica_pid() -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if REPLICA_TITLE in Path(f"/proc/{entry}/cmdline").read_bytes():
                    return int(entry)
            except OSError:
                continue
    raise RuntimeError("no FaceService replica process found")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def burst_rss(base: str, pid: int, body: bytes, content_type: str, count: int) -> tuple[float, float, float, list[int]]:
    """Replica RSS (MB) before, at the peak during, and 3 s after `count` concurrent requests."""
    before = rss_mb(pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(rss_mb(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    with ThreadPoolExecutor(count) as pool:
        statuses = list(pool.map(lambda _: post(base + "/predict", body, content_type), range(count)))
    done.set()
    sampler.join()
    time.sleep(3)
    return before, max(peak), rss_mb(pid), statuses


def bench_serve(runs: int, burst: int) -> None:
    import ray
    from ray import serve

    from facetune.serve.app import APP_NAME, ServeSettings, build_app

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    requests = hostile_requests()
    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = ServeSettings(min_replicas=1, max_replicas=1)
        serve.run(build_app(asdict(settings)), name=APP_NAME, route_prefix="/")
        good = face_photo(Path(tempfile.mkdtemp()) / "face.jpg").read_bytes()
        assert post(base + "/predict", good, "image/jpeg") == 200  # warm: models and detector loaded
        print(f"/health while each request is in flight (median of {runs} runs of the slowest answer):")
        for name, body, content_type in requests:
            figures = [health_while(base, body, content_type) for _ in range(runs)]
            slowest = statistics.median(f[0] for f in figures)
            took = statistics.median(f[2] for f in figures)
            print(f"  {name:<40} /health {slowest * 1000:7.1f} ms   request {figures[0][1]} in {took:6.2f} s", flush=True)
        pid = replica_pid()
        bombs = [r for r in requests if "PNG" in r[0] and ("bomb" in r[0] or "1-bit" in r[0])]
        print(f"replica RSS (MB), {burst} concurrent requests:")
        for name, body, content_type in [*bombs, *requests[-2:]]:
            before, peak, after, statuses = burst_rss(base, pid, body, content_type, burst)
            print(f"  {name:<40} before {before:7.0f}  peak {peak:7.0f}  after {after:7.0f}  "
                  f"statuses {sorted(set(statuses))}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_peak_rss(image: Path, out: Path) -> tuple[float, int, bool]:
    """(peak RSS in MB, exit code, whether PIL's bomb warning reached stderr) of one predict run."""
    command = [sys.executable, "-c",
               "import resource, sys; from facetune.cli import main; code = main(sys.argv[1:]); "
               "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
               "sys.exit(code)",
               "predict", str(image), "--out", str(out), "--quiet", "--no-ray"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    kb = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("maxrss_kb"))
    return kb / 1024, done.returncode, "DecompressionBombWarning" in done.stderr


def bench_cli(runs: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench_hardening_"))
    images = {
        "64x64 crop (baseline)": ("crop.png", encoded(Image.fromarray(
            np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)), "PNG")),
        f"largest accepted ({int(MAX_PIXELS ** 0.5)}^2 RGBA PNG)": ("largest.png", largest_png()),
        "12000x9000 JPEG (drafted to 1/4)": ("huge.jpg", huge_jpeg()),
        "12000x12000 PNG bomb (refused)": ("bomb.png", png_bomb(12_000)),
    }
    print(f"facetune predict peak RSS (median of {runs} runs, MB):")
    for name, (file_name, data) in images.items():
        path = folder / file_name
        path.write_bytes(data)
        figures = [cli_peak_rss(path, folder / "p.csv") for _ in range(runs)]
        warned = any(f[2] for f in figures)
        print(f"  {name:<40} {statistics.median(f[0] for f in figures):7.0f}  exit {figures[0][1]}"
              f"{'  PIL warning printed' if warned else ''}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each figure (medians are printed)")
    parser.add_argument("--burst", type=int, default=8, help="concurrent requests in the RSS bursts")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()
    if not args.skip_cli:
        bench_cli(args.runs)
    if not args.skip_serve:
        bench_serve(args.runs, args.burst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
