"""Benchmark: the service with each shipped model, for face crops and for 512x512 photos.

    python bench/serve_models.py [--requests 120] [--concurrency 1,8,32] [--models ensemble,fast]

Starts a private local Ray instance and `facetune serve`'s app (one replica, its default
batching) on a free loopback port, once per shipped model (--pretrained ensemble / fast). For
each kind of request -- a 64x64 UTKFace test crop, and 512x512 photos with 1 to 5 test faces
pasted into background photos (tests/scenes.py, rotated up to 15 degrees; the service finds the
faces with its default detector) -- it sends a warm-up, then --requests POST /predict at each
concurrency, and prints requests/s and p50/p99 latency. A request counts as an error unless it
answers 200 with at least one face. Everything started is shut down by its own handle.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the scene maker

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from facetune.data.loading import load_split  # noqa: E402
from facetune.data.prepare import ensure_prepared  # noqa: E402
from facetune.serve.app import APP_NAME, ServeSettings, build_app  # noqa: E402
from facetune.storage import ResultsStore  # noqa: E402
import scenes  # noqa: E402
from serve import free_port, load  # noqa: E402  (bench/serve.py: the same client)

IMAGES = REPO_ROOT.parent / "shared" / "data" / "UTKFace"
ANY_FACES = range(1, 100)
PHOTOS = 10  # distinct photos, cycled through
PHOTO_SIZE = (512, 512)  # (height, width)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="prepared folder or raw source (default: the default data)")
    parser.add_argument("--work", default="runs/bench-fast", help="where a raw source is prepared")
    parser.add_argument("--models", default="ensemble,fast", help="shipped models to serve, comma-separated")
    parser.add_argument("--concurrency", default="1,8,32", help="concurrencies, comma-separated")
    parser.add_argument("--requests", type=int, default=120, help="requests at each concurrency")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


@dataclass
class Phase:
    model: str
    kind: str
    concurrency: int
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def request_bodies(data: str | None, work: str) -> dict[str, list[bytes]]:
    """{"crop": test crops as JPEG files, "photo": 512x512 photos with 1-5 test faces}."""
    test = load_split(ensure_prepared(data, ResultsStore(Path(work))), "test")
    originals = [IMAGES / f"{source}.chip.jpg" for source in test.source[:200]]
    crops = [path.read_bytes() for path in originals if path.is_file()][:PHOTOS]
    faces = [np.asarray(Image.open(path).convert("RGB")) for path in originals if path.is_file()]
    if not crops:
        raise SystemExit(f"bench/serve_models.py: needs the UTKFace JPEG folder at {IMAGES} for its crops and photos")
    scenes.SCENE_SIZE = PHOTO_SIZE
    rng, photos = np.random.default_rng(0), scenes.background_photos()
    pictures = [scenes.make_scene(rng, photos, faces, list(rng.choice(len(faces), size=1 + i % 5, replace=False)))[0]
              for i in range(PHOTOS)]
    return {"crop": crops, "photo": [jpeg(picture) for picture in pictures]}


def main() -> int:
    args = parse_args()
    import ray
    from ray import serve

    bodies = request_bodies(args.data, args.work)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    phases: list[Phase] = []
    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for model in args.models.split(","):
            settings = ServeSettings(pretrained=model, min_replicas=1, max_replicas=1,
                                     max_ongoing_requests=max(64, 2 * max(concurrencies)))
            serve.run(build_app(asdict(settings)), name=APP_NAME, route_prefix="/")
            for kind, kind_bodies in bodies.items():
                asyncio.run(load(url, kind_bodies, 20, 4, ANY_FACES))  # warm-up
                for concurrency in concurrencies:
                    seconds, latencies, errors = asyncio.run(load(url, kind_bodies, args.requests, concurrency, ANY_FACES))
                    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
                    phase = Phase(model, kind, concurrency, args.requests, seconds, errors, float(p50), float(p99))
                    phases.append(phase)
                    print(f"{model:9s} {kind:6s} c={concurrency:<3} {phase.rps:7.1f} req/s  p50 {p50:7.1f}  "
                          f"p99 {p99:7.1f} ms  errors {errors}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    by = {(p.model, p.kind, p.concurrency): p for p in phases}
    for kind in bodies:
        for concurrency in concurrencies:
            if ("fast", kind, concurrency) in by and ("ensemble", kind, concurrency) in by:
                print(f"{kind:6s} c={concurrency:<3} fast / ensemble requests/s = "
                      f"{by['fast', kind, concurrency].rps / by['ensemble', kind, concurrency].rps:.1f}x")
    if args.json:
        args.json.write_text(json.dumps([asdict(p) | {"rps": p.rps} for p in phases], indent=1))
    return 0 if all(p.errors == 0 for p in phases) else 1


if __name__ == "__main__":
    sys.exit(main())
