"""The Ray Serve application: one HTTP ingress deployment that batches faces across requests,
plus a one-replica counter so /health reports the refusals of every replica together.

    build_app({"models": "runs/results"})          # what `serve run` / `serve deploy` import
    serve run facetune.serve.app:build_app models=runs/results
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from importlib import resources
from typing import Any, Mapping

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from facetune.detectors import DEFAULT_DETECTOR, check_detector
from facetune.devices import parse_device
from facetune.errors import InvalidInputError
from facetune.release.paths import PRETRAINED_CHOICES
from facetune.serve import uploads
from facetune.serve.inference import describe_models, face_entries, load_predictor, models_used
from facetune.serve.uploads import BadRequest, read_request

APP_NAME = "facetune"
#: Requests a replica parses, decodes and searches at once (the rest wait their turn): each may
#: hold a few hundred MB at MAX_PIXELS, so this bounds a replica's memory, not only its time.
READ_THREADS = 2


@dataclass(frozen=True)
class ServeSettings:
    """Everything an application is built from; also the `args:` of raycfg/serve.yaml."""

    models: str | None = None  # results directory; None: the package's pretrained model named by `pretrained`
    family: str | None = None
    # Without `models`: which shipped model answers (facetune.release.paths.PRETRAINED_CHOICES).
    pretrained: str = "fast"
    device: str | None = None
    max_batch_size: int = 32  # 1 turns batching off (each face its own forward pass)
    batch_wait_timeout_s: float = 0.005
    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 16
    max_ongoing_requests: int = 64  # per replica; must exceed max_batch_size for full batches
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0  # > 0 puts each replica on a GPU (the models then run on cuda)
    max_body_bytes: int = uploads.MAX_BODY_BYTES
    detector: str = DEFAULT_DETECTOR  # cnn or haar (facetune.detectors)

    def __post_init__(self) -> None:
        # Refused here, in one line, rather than as a replica that fails to start again and again.
        # The device's spelling only: whether it exists is for the replica, which may sit on a GPU node.
        parse_device(self.device, "device")
        if self.pretrained not in PRETRAINED_CHOICES:
            raise InvalidInputError(f"pretrained {self.pretrained!r}: choose one of {list(PRETRAINED_CHOICES)}")
        check_detector(self.detector, "detector")
        limits = (("max_batch_size", 1), ("min_replicas", 1), ("max_ongoing_requests", 1), ("max_body_bytes", 1),
                  ("batch_wait_timeout_s", 0), ("replica_cpus", 0), ("replica_gpus", 0))
        for name, least in limits:
            if not getattr(self, name) >= least:
                raise InvalidInputError(f"{name} {getattr(self, name)}: must be at least {least}")
        if not self.target_ongoing_requests > 0:
            raise InvalidInputError(f"target_ongoing_requests {self.target_ongoing_requests}: must be above 0")
        if self.max_replicas < self.min_replicas:
            raise InvalidInputError(f"max_replicas {self.max_replicas}: must be at least min_replicas ({self.min_replicas})")

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> ServeSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(args) - known
        if unknown:
            raise ValueError(f"unknown serve settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**args)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class RequestCounts:
    """Answered and refused requests of all FaceService replicas, by kind."""

    def __init__(self) -> None:
        self.started = time.time()
        self.answered = 0
        self.refused: Counter[str] = Counter()

    def record(self, kind: str | None) -> None:
        if kind is None:
            self.answered += 1
        else:
            self.refused[kind] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "answered": self.answered,
            "refused": sum(self.refused.values()),
            "refused_by_kind": dict(self.refused),
        }


@serve.deployment
class FaceService:
    """GET / (the page), GET /health, GET /models, POST /predict."""

    def __init__(self, counts: DeploymentHandle, settings: dict[str, Any]) -> None:
        self.settings = ServeSettings.from_args(settings)
        self.counts = counts
        self.predictor = load_predictor(self.settings.models, self.settings.family, self.settings.device,
                                        self.settings.pretrained)
        self.models_used = models_used(self.predictor)
        self.page = resources.files("facetune.serve").joinpath("page.html").read_text(encoding="utf-8")
        self.predict_faces.set_max_batch_size(self.settings.max_batch_size)
        self.predict_faces.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)
        self.readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="facetune-read")

    async def __call__(self, request: Request) -> Response:
        path = _route(request)
        try:
            if path == "/predict":
                if request.method != "POST":
                    raise BadRequest(405, "wrong_method", "POST an image to /predict")
                return JSONResponse(await self._predict(request))
            if request.method != "GET":
                raise BadRequest(405, "wrong_method", f"{path} answers GET only")
            if path == "/":
                return HTMLResponse(self.page)
            if path == "/health":
                return JSONResponse({"status": "ok", **await self.counts.snapshot.remote()})
            if path == "/models":
                return JSONResponse(
                    {"models": describe_models(self.predictor), "max_batch_size": self.settings.max_batch_size}
                )
            raise BadRequest(404, "not_found", f"no route {path}: try /, /predict, /health or /models")
        except BadRequest as err:
            self.counts.record.remote(err.kind)  # fire and forget: counting must not slow the answer
            return JSONResponse(err.as_json(), status_code=err.status)

    async def _predict(self, request: Request) -> dict[str, Any]:
        uploads.check_declared_length(request.headers.get("content-length"))
        # The body is read (capped) before its type is judged, so every refusal reaches the client.
        body = await uploads.read_capped(request.stream(), self.settings.max_body_bytes)
        # Everything past reading the bytes runs in a thread, never on the event loop, so /health
        # and other requests are answered while a form is parsed or an image decoded; PIL's codecs
        # and the detector release the GIL.
        upload, decoded, faces = await asyncio.get_running_loop().run_in_executor(
            self.readers, read_request, body, request.headers.get("content-type", ""), self.settings.detector
        )
        entries = await asyncio.gather(*(self.predict_faces(face.crop) for face in faces))
        self.counts.record.remote(None)
        return {
            "image": {"width": decoded.size[0], "height": decoded.size[1], "filename": upload.filename},
            "faces": [
                {"box": dict(zip(("x", "y", "width", "height"), face.box)), **entry}
                | ({"score": face.score} if face.score is not None else {})
                for face, entry in zip(faces, entries)
            ],
            "models": self.models_used,
        }

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def predict_faces(self, crops: list) -> list[dict[str, Any]]:
        """Faces from concurrent requests, one forward pass per task for all of them."""
        return face_entries(self.predictor, crops)


def _route(request: Request) -> str:
    """The path below the application's route prefix ('/' when mounted at /)."""
    path = request.url.path
    root = request.scope.get("root_path", "").rstrip("/")
    if root and path.startswith(root):
        path = path[len(root):]
    return "/" + path.strip("/") if path.strip("/") else "/"


def build_app(args: Mapping[str, Any] | None = None) -> serve.Application:
    """The application for `serve run` / `serve deploy` (import path facetune.serve.app:build_app)."""
    settings = ServeSettings.from_args(dict(args or {}))
    service = FaceService.options(
        ray_actor_options={"num_cpus": settings.replica_cpus, "num_gpus": settings.replica_gpus},
        max_ongoing_requests=settings.max_ongoing_requests,
        autoscaling_config={
            "min_replicas": settings.min_replicas,
            "max_replicas": settings.max_replicas,
            "target_ongoing_requests": settings.target_ongoing_requests,
        },
    )
    return service.bind(RequestCounts.bind(), asdict(settings))
