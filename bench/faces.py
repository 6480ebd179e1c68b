"""Benchmark: the CNN face detector against the Haar cascades on composite scenes of test-split faces.

    python bench/faces.py --models RESULTS_DIR|pretrained [--data PREPARED_OR_SOURCE] [--scenes 300]
                          [--photos 60] [--detectors cnn,haar] [--cascade NAME]

Each scene is a face-free skimage photograph (400x300) with one or two test-split faces pasted in
(UTKFace 64x64 colour crops when the shared folder is there, else the prepared 48x48 gray ones),
each 15-50% of the scene's shorter side (tests/scenes.py). Two sets of `--scenes` scenes each:
"rotated" (roll up to +-30 degrees) and "turned" (yaw up to +-45 degrees, simulated by a
perspective squeeze of the flat crop, with roll up to +-15). Every detector sees the same scenes.
Prints per set and detector: recall (a pasted face counts as found when a box overlaps its square
with IoU >= 0.5), mean IoU, false detections, and gender accuracy and age MAE of the models on the
detected, aligned crops next to the same faces given whole (their prepared crops). Then throughput
on `--photos` 512x512 scenes with 1-5 faces (12-30% of the side), detectors interleaved per photo,
detect + align + crop in one process, and the ratio cnn / haar.
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
from facetune.detectors import check_detector  # noqa: E402
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
    parser.add_argument("--scenes", type=int, default=300, help="scenes per set (rotated, turned)")
    parser.add_argument("--photos", type=int, default=60, help="512x512 photos for the throughput figure")
    parser.add_argument("--detectors", default="cnn,haar", help="comma-separated, from: cnn, haar")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cascade", default=faces_module.FACE_CASCADE, help="face cascade file to compare")
    return parser.parse_args()


def source_faces(data: Path, images: Path) -> tuple[list[np.ndarray], object]:
    from PIL import Image

    test = load_split(data, "test")
    faces, originals = [], 0
    for source, pixels in zip(test.source, test.pixels):
        # A prepared UTKFace row's source is the file name itself (`..._date.jpg.chip.jpg`).
        original = images / Path(source).name
        if original.is_file():
            faces.append(np.asarray(Image.open(original).convert("RGB")))
            originals += 1
        else:
            faces.append(pixels.reshape(IMAGE_SIZE, IMAGE_SIZE))
    print(f"test faces: {originals} of {len(faces)} as UTKFace colour originals, the rest as prepared 48x48 gray")
    return faces, test


#: The scene sets: name -> (max roll, max yaw) in degrees.
SETS = {"rotated": (30.0, 0.0), "turned": (15.0, 45.0)}
PHOTO_SIZE = (512, 512)


def main() -> int:
    args = parse_args()
    faces_module.FACE_CASCADE = args.cascade
    detectors = [check_detector(name) for name in args.detectors.split(",")]
    predictor = (Predictor.pretrained(device="cpu") if args.models == "pretrained"
                 else Predictor.from_results(args.models, device="cpu"))
    with tempfile.TemporaryDirectory(prefix="facetune-bench-faces-") as scratch:
        prepared = ensure_prepared(args.data or args.images, ResultsStore(scratch))
        faces, test = source_faces(prepared, args.images)
    photos = background_photos()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(faces))
    gender_names = np.asarray(TASKS["gender"].class_names)
    next_face = 0

    def accuracy(frame, index) -> tuple[float, float]:
        truth_gender, truth_age = gender_names[test.gender[index]], test.age[index]
        return (100 * float(np.mean(frame["gender"].to_numpy() == truth_gender)),
                float(np.mean(np.abs(frame["age"].to_numpy() - truth_age))))

    for set_name, (max_angle, max_yaw) in SETS.items():
        scenes = []
        for _ in range(args.scenes):
            count = 1 if rng.random() < 0.7 else 2
            indices = [int(order[(next_face + k) % len(order)]) for k in range(count)]
            next_face += count
            scenes.append(make_scene(rng, photos, faces, indices, max_angle=max_angle, max_yaw=max_yaw))
        pasted_total = sum(len(pasted) for _, pasted in scenes)
        print(f"set {set_name}: {args.scenes} scenes, {pasted_total} faces pasted, roll up to +-{max_angle:g} deg, "
              f"yaw up to +-{max_yaw:g} deg")
        for detector in detectors:
            found_crops, found_index, ious, false_boxes = [], [], [], 0
            for scene, pasted in scenes:
                detected = faces_module.find_faces(scene, "detect", detector)
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
            scene_acc, scene_mae = accuracy(predictor.predict_array(np.stack(found_crops)), index)
            whole_acc, whole_mae = accuracy(predictor.predict_array(test.pixels[index]), index)
            print(f"  {detector}: recall {100 * len(ious) / pasted_total:.1f}% ({len(ious)}/{pasted_total}, "
                  f"IoU >= {MATCH_IOU}), mean IoU {np.mean(ious):.3f}, false detections {false_boxes}")
            print(f"  {detector}: gender accuracy aligned {scene_acc:.2f}% vs whole {whole_acc:.2f}% "
                  f"({scene_acc - whole_acc:+.2f} points); age MAE aligned {scene_mae:.2f} vs whole "
                  f"{whole_mae:.2f} years ({scene_mae - whole_mae:+.2f})")

    seconds = dict.fromkeys(detectors, 0.0)
    placed = 0
    for _ in range(args.photos):
        count = int(rng.integers(1, 6))
        indices = [int(order[(next_face + k) % len(order)]) for k in range(count)]
        next_face += count
        photo, pasted = make_scene(rng, photos, faces, indices, min_fraction=0.12, max_fraction=0.3, size=PHOTO_SIZE)
        placed += len(pasted)
        for detector in detectors:  # interleaved, so both see the same load on a shared machine
            started = time.perf_counter()
            faces_module.find_faces(photo, "detect", detector)
            seconds[detector] += time.perf_counter() - started
    rates = {detector: args.photos / spent for detector, spent in seconds.items()}
    print(f"throughput on {args.photos} {PHOTO_SIZE[1]}x{PHOTO_SIZE[0]} photos ({placed} faces, 1-5 each; "
          "detect + align + crop, 1 process):")
    for detector, rate in rates.items():
        print(f"  {detector}: {rate:.1f} photos/s ({1000 / rate:.1f} ms per photo)")
    if {"cnn", "haar"} <= set(rates):
        print(f"  cnn / haar: {rates['cnn'] / rates['haar']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
