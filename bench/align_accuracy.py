"""Predictions on CNN-detected, aligned crops against the same faces given whole, on every test face.

    python bench/align_accuracy.py [--faces N] [--scales 0.94,1.0,1.06] [--seed 1]

bench/faces.py compares predictions on the ~350 faces of each scene set, where one point of gender
accuracy is 3-4 faces. This pastes each test-split face (UTKFace colour original) into its own
400x300 scene, rolled up to 30 degrees (tests/scenes.py), finds it with the CNN detector (IoU >= 0.5
with the pasted square) and predicts with the shipped models on the aligned 48x48 crop and on the
face's prepared crop (the whole face, as in training). `--scales` also aligns with the reference
points spread about their centre by each factor (above 1: the face larger in the crop), to show how
sensitive the figures are to the measured geometry (facetune.predict.alignment).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT / "bench"))

import numpy as np  # noqa: E402

from facetune.data.prepare import ensure_prepared  # noqa: E402
from facetune.predict import alignment, retinaface  # noqa: E402
from facetune.predict.predictor import Predictor  # noqa: E402
from facetune.storage import ResultsStore  # noqa: E402
from facetune.tasks import TASKS  # noqa: E402
from faces import MATCH_IOU, UTKFACE, source_faces  # noqa: E402
from scenes import background_photos, iou, make_scene  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=UTKFACE)
    parser.add_argument("--faces", type=int, default=None, help="first N test faces (default: all)")
    parser.add_argument("--scales", default="0.94,1.0,1.06")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    scales = [float(v) for v in args.scales.split(",")]
    with tempfile.TemporaryDirectory(prefix="facetune-bench-align-") as scratch:
        faces, test = source_faces(ensure_prepared(args.images, ResultsStore(scratch)), args.images)
    predictor = Predictor.pretrained(device="cpu")
    photos, rng = background_photos(), np.random.default_rng(args.seed)
    reference = alignment.REFERENCE_POINTS
    centre = reference.mean(axis=0)
    crops: dict[float, list[np.ndarray]] = {scale: [] for scale in scales}
    found = []
    count = len(faces) if args.faces is None else min(args.faces, len(faces))
    try:
        for index in range(count):
            scene, (pasted,) = make_scene(rng, photos, faces, [index], max_angle=30)
            hits = [d for d in retinaface.detect(scene)
                    if iou(alignment.crop_square(d.landmarks), pasted.box) >= MATCH_IOU]
            if not hits:
                continue
            found.append(index)
            for scale in scales:
                alignment.REFERENCE_POINTS = centre + (reference - centre) * scale
                crops[scale].append(alignment.align_face(scene, hits[0].landmarks))
            alignment.REFERENCE_POINTS = reference
    finally:
        alignment.REFERENCE_POINTS = reference
    index = np.asarray(found)
    genders = np.asarray(TASKS["gender"].class_names)[test.gender[index]]

    def scores(frame) -> tuple[float, float]:
        return (100 * float(np.mean(frame["gender"].to_numpy() == genders)),
                float(np.mean(np.abs(frame["age"].to_numpy() - test.age[index]))))

    whole = predictor.predict_array(test.pixels[index])
    whole_acc, whole_mae = scores(whole)
    print(f"{len(found)}/{count} test faces found; whole: gender {whole_acc:.2f}%, age MAE {whole_mae:.2f} years")
    for scale in scales:
        frame = predictor.predict_array(np.stack(crops[scale]))
        acc, mae = scores(frame)
        differ = int(np.sum(frame["gender"].to_numpy() != whole["gender"].to_numpy()))
        print(f"  geometry x{scale:g}: gender {acc:.2f}% ({acc - whole_acc:+.2f} points; {differ} faces called "
              f"otherwise than whole), age MAE {mae:.2f} ({mae - whole_mae:+.2f} years)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
