"""Measure where the CNN detector puts the five landmarks inside UTKFace's aligned crops.

    python bench/align_reference.py [--images /work/shared/data/UTKFace] [--sample 1000] [--seed 0]

UTKFace's JPEGs are aligned crops already, so the mean landmark positions relative to the crop
(in crop sides, origin top-left) are the geometry facetune.predict.alignment must reproduce.
Each sampled 64x64 crop is upscaled 3x (bicubic, so the face is well above the detector's
smallest anchor) and centred on a mid-gray canvas twice its side; the surest detection whose
box centre lies inside the crop is kept. Prints the detection rate, the mean and spread of each
point, the eye-line angle, and the raw detector box relative to the crop, as Python constants.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from facetune.predict import retinaface  # noqa: E402

UTKFACE = REPO_ROOT.parent / "shared" / "data" / "UTKFace"
UPSCALE = 3
NAMES = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=UTKFACE)
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = sorted(args.images.glob("*.jpg"))
    rng = np.random.default_rng(args.seed)
    chosen = [files[i] for i in rng.choice(len(files), size=min(args.sample, len(files)), replace=False)]
    points, boxes, angles = [], [], []
    for path in chosen:
        crop = Image.open(path).convert("RGB")
        side = crop.width * UPSCALE
        canvas = Image.new("RGB", (2 * side, 2 * side), (128, 128, 128))
        canvas.paste(crop.resize((side, side), Image.Resampling.BICUBIC), (side // 2, side // 2))
        inside = [d for d in retinaface.detect(np.asarray(canvas))
                  if side / 2 <= d.box[0] + d.box[2] / 2 <= 1.5 * side and side / 2 <= d.box[1] + d.box[3] / 2 <= 1.5 * side]
        if not inside:
            continue
        best = inside[0]
        points.append((best.landmarks - side / 2) / side)
        x, y, w, h = best.box
        boxes.append(((x - side / 2) / side, (y - side / 2) / side, w / side, h / side))
        (lx, ly), (rx, ry) = best.landmarks[:2]
        angles.append(math.degrees(math.atan2(ry - ly, rx - lx)))
    points, boxes = np.asarray(points), np.asarray(boxes)
    print(f"{len(points)}/{len(chosen)} crops with a face found ({100 * len(points) / len(chosen):.1f}%)")
    mean, spread = points.mean(axis=0), points.std(axis=0)
    for name, m, s in zip(NAMES, mean, spread):
        print(f"  {name:12s} x {m[0]:.4f} (sd {s[0]:.4f})  y {m[1]:.4f} (sd {s[1]:.4f})")
    print(f"eye-line angle: mean {np.mean(angles):+.2f} deg, sd {np.std(angles):.2f}")
    print("detector box / crop (x, y, w, h):", np.round(boxes.mean(axis=0), 4).tolist())
    print("REFERENCE_POINTS = (" + ", ".join(f"({m[0]:.4f}, {m[1]:.4f})" for m in mean) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
