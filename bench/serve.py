"""Benchmark: the prediction service under load, with dynamic batching and without, in one run.

    python bench/serve.py [--models RESULTS_DIR] [--requests 2000] [--concurrency 16] [--ramp 1,4,16,32]

Starts a private local Ray instance and the facetune Serve app on a free loopback port with one
replica, then from this process (an aiohttp client) for each mode: a warm-up, --requests POST
/predict at a fixed --concurrency, then a ramp of --ramp-requests at each concurrency. The same
replica settings are redeployed with max_batch_size=1 for the "one request at a time" side.
Prints requests/s, p50/p95/p99 latency and errors per phase, and the batched/unbatched ratio of
the fixed-concurrency throughput. Everything started is shut down by its own handle at the end.

Without --models, untrained models of the study's architectures are built into a temp dir
(bench/predict.py's study_models): serving speed does not depend on the weights. The image is a
UTKFace JPEG from the shared data when present, else a drawn face.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # runnable from a checkout without installing
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the drawn face when the shared data is absent

import aiohttp  # noqa: E402  (comes with ray[default])
import numpy as np  # noqa: E402

from facetune.records import MODEL_CONFIG_FILE, MODEL_WEIGHTS_FILE, SUMMARY_FILE, SummaryEntry, summary_to_json  # noqa: E402
from facetune.serve.app import APP_NAME, ServeSettings, build_app  # noqa: E402
from facetune.tasks import TASKS  # noqa: E402
from predict import study_models  # noqa: E402  (bench/ is on sys.path as the script's folder)

DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "data" / "UTKFace"
#: No single request may hang the benchmark.
REQUEST_TIMEOUT_S = 30


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="a sweep's results dir (default: untrained study models)")
    parser.add_argument("--family", default="cnn", help="family of the built models")
    parser.add_argument("--requests", type=int, default=2000, help="requests at the fixed concurrency")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    parser.add_argument("--ramp", default="1,4,16,32", help="concurrencies of the ramp, comma-separated")
    parser.add_argument("--ramp-requests", type=int, default=200, help="requests at each ramp step")
    parser.add_argument("--max-batch-size", type=int, default=32, help="the batched side's batch size")
    parser.add_argument("--cpus", type=int, help="CPUs for the local Ray instance (default: all)")
    parser.add_argument("--json", type=Path, help="also write every phase's figures here")
    return parser.parse_args()


@dataclass
class Phase:
    mode: str
    name: str
    concurrency: int
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds

    def line(self) -> str:
        return (f"{self.mode:<10} {self.name:<8} c={self.concurrency:<3} n={self.requests:<5} "
                f"{self.rps:7.1f} req/s  p50 {self.p50_ms:6.1f}  p95 {self.p95_ms:6.1f}  "
                f"p99 {self.p99_ms:6.1f} ms  errors {self.errors}")


async def load(url: str, body: bytes | list[bytes], requests: int, concurrency: int,
               faces: range = range(1, 2)) -> tuple[float, list[float], int]:
    """POST `body` (or each of a list in turn) `requests` times with `concurrency` in flight:
    (seconds, latencies in s, errors). An answer is an error unless it is 200 with a number of
    faces in `faces`."""
    bodies = body if isinstance(body, list) else [body]
    latencies: list[float] = []
    errors = 0
    remaining = iter(range(requests))
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:

        async def worker() -> None:
            nonlocal errors
            for number in remaining:  # shared iterator: each request is taken by exactly one worker
                started = time.perf_counter()
                try:
                    async with session.post(url, data=bodies[number % len(bodies)],
                                            headers={"Content-Type": "image/jpeg"}) as resp:
                        answer = await resp.json()
                        ok = resp.status == 200 and len(answer.get("faces", ())) in faces
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies, errors


def measure(mode: str, name: str, url: str, body: bytes, requests: int, concurrency: int) -> Phase:
    seconds, latencies, errors = asyncio.run(load(url, body, requests, concurrency))
    p50, p95, p99 = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    phase = Phase(mode, name, concurrency, requests, seconds, errors, float(p50), float(p95), float(p99))
    print(phase.line(), flush=True)
    return phase


def results_dir(family: str, out: Path) -> Path:
    """A results dir (summary.json + model dirs) around untrained study models."""
    entries = [
        SummaryEntry(family=family, task=task, val={TASKS[task].metric: 0.0}, test={},
                     checkpoint=f"{model_dir.name}/{MODEL_WEIGHTS_FILE}",
                     num_parameters=json.loads((model_dir / MODEL_CONFIG_FILE).read_text())["num_parameters"])
        for task, model_dir in study_models(family, out).items()
    ]
    (out / SUMMARY_FILE).write_text(json.dumps(summary_to_json(entries)))
    return out


def test_image() -> bytes:
    files = sorted(DEFAULT_IMAGES.glob("*.jpg"))[:1] if DEFAULT_IMAGES.is_dir() else []
    if files:
        return files[0].read_bytes()
    from serve_fixture import face_photo

    return face_photo(Path(tempfile.mkdtemp()) / "face.jpg", size=(200, 200)).read_bytes()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    args = parse_args()
    import ray
    from ray import serve

    scratch = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    models = args.models or results_dir(args.family, scratch)
    body = test_image()
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    ramp = [int(c) for c in args.ramp.split(",") if c]
    # One replica, no autoscaling: the comparison is batching, not replica count.
    batched = ServeSettings(models=str(models), max_batch_size=args.max_batch_size, min_replicas=1,
                            max_replicas=1, max_ongoing_requests=max(64, 2 * max(ramp + [args.concurrency])))
    phases: list[Phase] = []
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        print(f"image: {len(body)} bytes; models: {models}; {args.requests} requests at c={args.concurrency}, "
              f"ramp {ramp} x {args.ramp_requests}", flush=True)
        for mode, settings in (("batched", batched), ("one-by-one", replace(batched, max_batch_size=1))):
            serve.run(build_app(asdict(settings)), name=APP_NAME, route_prefix="/")
            measure(mode, "warm-up", url, body, 50, 4)
            phases.append(measure(mode, "fixed", url, body, args.requests, args.concurrency))
            for concurrency in ramp:
                phases.append(measure(mode, "ramp", url, body, args.ramp_requests, concurrency))
    finally:
        serve.shutdown()
        ray.shutdown()

    fixed = {p.mode: p for p in phases if p.name == "fixed"}
    ratio = fixed["batched"].rps / fixed["one-by-one"].rps
    print(f"batching ratio at c={args.concurrency}: {ratio:.2f}x "
          f"({fixed['batched'].rps:.1f} vs {fixed['one-by-one'].rps:.1f} req/s); "
          f"errors {sum(p.errors for p in phases)}")
    if args.json:
        args.json.write_text(json.dumps({"ratio": ratio, "phases": [asdict(p) | {"rps": p.rps} for p in phases]},
                                        indent=2))
    return 0 if all(p.errors == 0 for p in phases) else 1


if __name__ == "__main__":
    sys.exit(main())
