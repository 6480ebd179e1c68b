"""Benchmark: face detection and alignment on composite scenes built from test-split faces.

    python bench/faces.py --models RESULTS_DIR|pretrained [--data PREPARED_OR_SOURCE] [--scenes 500] [--cascade NAME]

Each scene is a face-free skimage photograph with one or two test-split faces pasted in
(UTKFace 64x64 colour crops when the shared folder is there, else the prepared 48x48 gray
ones), each 15-50% of the scene's shorter side, rotated up to 15 degrees (tests/scenes.py).
Prints detection recall (a pasted face counts as found when a box overlaps its square with
IoU >= 0.5), mean IoU, false detections, detection throughput, and gender accuracy and age MAE
of the models on the detected crops next to the same faces predicted as the prepared crops.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

import numpy as np  # noqa: E402

from facetune.data.loading import load_split  # noqa: E402
from facetune.data.prepare import ensure_prepared  # noqa: E402
from facetune.predict import face_detection as faces_module  # noqa: E402
from facetune.predict.predictor import Predictor  # noqa: E402
from facetune.records import IMAGE_SIZE  # noqa: E402
from facetune.storage import ResultsStore  # noqa: E402
from facetune.tasks import TASKS  # noqa: E402
from scenes import background_photos, iou, make_scene  # noqa: E402

UTKFACE = REPO_ROOT.parent / "shared" / "data" / "UTKFace"
MATCH_IOU = 0.5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", required=True, help="results dir with age and gender models, or 'pretrained' (the shipped ones)")
    parser.add_argument("--data", default=None, help="prepared folder or raw source (default: the shared UTKFace "
                        "folder, prepared into a temp folder first, so test faces have their colour originals)")
    parser.add_argument("--images", type=Path, default=UTKFACE, help="UTKFace folder (colour originals)")
    parser.add_argument("--scenes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cascade", default=faces_module.FACE_CASCADE, help="face cascade file to compare")
    return parser.parse_args()


def source_faces(data: Path, images: Path) -> tuple[list[np.ndarray], object]:
    test = load_split(data, "test")
    faces = []
    for source, pixels in zip(test.source, test.pixels):
        original = images / f"{source}.chip.jpg"
        if original.is_file():
            from PIL import Image

            faces.append(np.asarray(Image.open(original).convert("RGB")))
        else:
            faces.append(pixels.reshape(IMAGE_SIZE, IMAGE_SIZE))
    return faces, test


def main() -> int:
    args = parse_args()
    faces_module.FACE_CASCADE = args.cascade
    predictor = (Predictor.pretrained(device="cpu") if args.models == "pretrained"
                 else Predictor.from_results(args.models, device="cpu"))
    with tempfile.TemporaryDirectory(prefix="facetune-bench-faces-") as scratch:
        prepared = ensure_prepared(args.data or args.images, ResultsStore(scratch))
        faces, test = source_faces(prepared, args.images)
    photos = background_photos()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(faces))

    found_crops, found_index, ious, pasted_total, false_boxes, seconds, next_face = [], [], [], 0, 0, 0.0, 0
    for _ in range(args.scenes):
        count = 1 if rng.random() < 0.7 else 2
        indices = [int(order[(next_face + k) % len(order)]) for k in range(count)]
        next_face += count
        scene, pasted = make_scene(rng, photos, faces, indices)
        started = time.perf_counter()
        detected = faces_module.find_faces(scene, "detect")
        seconds += time.perf_counter() - started
        pasted_total += len(pasted)
        used = set()
        for paste in pasted:
            scores = [iou(face.box, paste.box) for face in detected]
            best = int(np.argmax(scores)) if scores else -1
            if best >= 0 and scores[best] >= MATCH_IOU and best not in used:
                used.add(best)
                ious.append(scores[best])
                found_crops.append(detected[best].crop48)
                found_index.append(paste.index)
        false_boxes += len(detected) - len(used)

    index = np.asarray(found_index)
    on_scene = predictor.predict_array(np.stack(found_crops))
    on_crop = predictor.predict_array(test.pixels[index])
    gender_names = np.asarray(TASKS["gender"].class_names)
    truth_gender, truth_age = gender_names[test.gender[index]], test.age[index]

    def report(frame) -> tuple[float, float]:
        return 100 * float(np.mean(frame["gender"].to_numpy() == truth_gender)), float(
            np.mean(np.abs(frame["age"].to_numpy() - truth_age)))

    scene_acc, scene_mae = report(on_scene)
    crop_acc, crop_mae = report(on_crop)
    print(f"cascade {args.cascade}: {args.scenes} scenes, {pasted_total} faces pasted")
    print(f"detection recall (IoU >= {MATCH_IOU}): {100 * len(ious) / pasted_total:.1f}% "
          f"({len(ious)}/{pasted_total}), mean IoU {np.mean(ious):.3f}, false detections {false_boxes}")
    print(f"detection throughput: {args.scenes / seconds:.1f} scenes/s "
          f"({1000 * seconds / args.scenes:.1f} ms per {SCENE_DESC}, detect+align+crop, 1 process)")
    print(f"gender accuracy: scene {scene_acc:.2f}% vs crop {crop_acc:.2f}% (diff {scene_acc - crop_acc:+.2f} points)")
    print(f"age MAE: scene {scene_mae:.2f} vs crop {crop_mae:.2f} years (diff {scene_mae - crop_mae:+.2f})")
    return 0


SCENE_DESC = "400x300 scene"

if __name__ == "__main__":
    sys.exit(main())
