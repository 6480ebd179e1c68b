"""Builders for the error-contract matrix (tests/test_error_contract.py): bad and unusual inputs.

Each builder writes what a user might hand `facetune` into a fresh folder and returns the
command line. Kept apart from the test module so the cases read as a table there.
"""
from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from facetune.records import PREPARED_FORMAT, PREPARED_MANIFEST
from synthetic import make_faces, write_kaggle_csv, write_utkface_folder

FACES = make_faces(30, seed=3)


def utk_name(i: int) -> str:
    return f"{FACES['age'][i]}_{FACES['gender'][i]}_{FACES['ethnicity'][i]}_2017{i:010d}.jpg.chip.jpg"


def face_image(i: int, size: int = 64) -> Image.Image:
    gray = Image.fromarray(FACES["pixels"][i].reshape(48, 48))
    return gray.resize((size, size), Image.Resampling.LANCZOS)


def good_csv(folder: Path, n: int = 30) -> Path:
    return write_kaggle_csv(folder / "faces.csv", {k: v[:n] for k, v in FACES.items()})


def csv_lines(folder: Path, n: int = 12) -> list[str]:
    return good_csv(folder, n).read_text().splitlines()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def utk_folder(folder: Path, n: int = 12) -> Path:
    return write_utkface_folder(folder / "UTKFace", {k: v[:n] for k, v in FACES.items()})


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------- CSV sources


def csv_extra_field(tmp: Path) -> Path:
    lines = csv_lines(tmp)
    lines[3] += ",surplus"
    return write_lines(tmp / "extra.csv", lines)


def csv_missing_fields(tmp: Path) -> Path:
    lines = csv_lines(tmp)
    lines[5] = "30,1"
    return write_lines(tmp / "short.csv", lines)


def csv_invalid_utf8(tmp: Path) -> Path:
    lines = csv_lines(tmp)
    data = ("\n".join(lines) + "\n").encode()
    bad_line = lines[2].encode()
    cut = bad_line.index(b",", bad_line.index(b",", bad_line.index(b",") + 1) + 1) + 1  # start of img_name
    data = data.replace(bad_line, bad_line[:cut] + b"\xff\xfe" + bad_line[cut:])
    (tmp / "utf8.csv").write_bytes(data)
    return tmp / "utf8.csv"


def csv_blank_lines_then_bad_row(tmp: Path) -> Path:
    lines = csv_lines(tmp)
    lines[6] = "x" + lines[6]  # a bad age on what becomes line 10, after three blank lines
    return write_lines(tmp / "blank.csv", lines[:2] + ["", "", ""] + lines[2:])


def csv_plus_sign_pixel(tmp: Path) -> Path:
    lines = csv_lines(tmp)
    head, pixels = lines[4].rsplit(",", 1)
    lines[4] = f"{head},+{pixels}"
    return write_lines(tmp / "plus.csv", lines)


def csv_blank_face(tmp: Path) -> Path:
    lines = csv_lines(tmp)
    head = lines[7].rsplit(",", 1)[0]
    lines[7] = head + "," + " ".join(["0"] * 2304)
    return write_lines(tmp / "black.csv", lines)


def csv_all_rows_bad(tmp: Path) -> Path:
    lines = csv_lines(tmp, 4)
    return write_lines(tmp / "allbad.csv", [lines[0]] + [line.rsplit(" ", 5)[0] for line in lines[1:]])


def csv_without_labels(tmp: Path) -> Path:
    lines = csv_lines(tmp, 6)
    return write_lines(tmp / "nolabels.csv", ["pixels"] + [line.rsplit(",", 1)[1] for line in lines[1:]])


def csv_with_unknown_labels(tmp: Path) -> Path:
    lines = csv_lines(tmp, 6)
    first = lines[1].split(",", 1)
    lines[1] = "," + first[1]  # age missing
    lines[2] = "999" + lines[2][lines[2].index(","):]  # age out of range
    return write_lines(tmp / "labels.csv", lines)


def csv_crlf_with_bom(tmp: Path) -> Path:
    text = "\r\n".join(csv_lines(tmp)) + "\r\n"
    (tmp / "windows.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    return tmp / "windows.csv"


def csv_all_fields_quoted(tmp: Path) -> Path:
    lines = csv_lines(tmp)
    return write_lines(tmp / "quoted.csv", [lines[0]] + [",".join(f'"{v}"' for v in line.split(",")) for line in lines[1:]])


def csv_stray_quote(tmp: Path) -> Path:
    lines = csv_lines(tmp)
    lines[3] = lines[3].replace(",", ',"3', 1)  # an unclosed quote in line 4's ethnicity
    return write_lines(tmp / "stray.csv", lines)


def png_named_csv(tmp: Path) -> Path:
    (tmp / "picture.csv").write_bytes(png_bytes(face_image(0)))
    return tmp / "picture.csv"


def text_named_gz(tmp: Path) -> Path:
    (tmp / "faces.csv.gz").write_text("age,ethnicity,gender,img_name,pixels\n")
    return tmp / "faces.csv.gz"


def gz_csv(tmp: Path) -> Path:
    data = good_csv(tmp, 10).read_bytes()
    (tmp / "faces.csv.gz").write_bytes(gzip.compress(data))
    return tmp / "faces.csv.gz"


def empty_csv(tmp: Path) -> Path:
    (tmp / "empty.csv").write_bytes(b"")
    return tmp / "empty.csv"


def header_only_csv(tmp: Path) -> Path:
    return write_lines(tmp / "header.csv", ["age,ethnicity,gender,img_name,pixels"])


def wrong_columns_csv(tmp: Path) -> Path:
    return write_lines(tmp / "other.csv", ["a,b", "1,2"])


# ------------------------------------------------------------------------------------- image folders


def nested_folder(tmp: Path) -> Path:
    root = tmp / "UTKFace"
    for part, indices in (("part1", range(0, 4)), ("part2/deeper", range(4, 7)), (".", range(7, 9))):
        (root / part).mkdir(parents=True, exist_ok=True)
        for i in indices:
            face_image(i).convert("RGB").save(root / part / utk_name(i), format="JPEG", quality=95)
    return root


def folder_with_symlinks(tmp: Path) -> Path:
    root = utk_folder(tmp, 5)
    (root / "sub").mkdir()
    os.symlink(root, root / "sub" / "loop")  # a folder that contains itself
    os.symlink(tmp / "gone.jpg", root / "1_0_0_20170000000099.jpg.chip.jpg")  # dangling
    os.symlink(root / "self_a", root / "self_b")
    os.symlink(root / "self_b", root / "self_a")  # a file symlink loop
    return root


def folder_with_odd_images(tmp: Path) -> Path:
    root = utk_folder(tmp, 5)
    Image.new("L", (1, 1), 128).save(root / f"40_0_0_2017{90:010d}.jpg.chip.png")
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(root / f"41_0_0_2017{91:010d}.jpg.chip.png")
    Image.new("RGB", (64, 64), (0, 0, 0)).save(root / f"42_0_0_2017{92:010d}.jpg.chip.jpg")
    (root / f"43_0_0_2017{93:010d}.jpg.chip.jpg").write_text("not a picture")
    (root / "README.txt").write_text("downloaded from somewhere")
    return root


def folder_without_faces(tmp: Path) -> Path:
    root = tmp / "notes"
    root.mkdir()
    (root / "a.txt").write_text("a")
    (root / "b.jpg").write_text("b")
    return root


def empty_folder(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def corrupt_jpeg(tmp: Path) -> Path:
    face_image(0).convert("RGB").save(tmp / "face.jpg", quality=95)
    data = (tmp / "face.jpg").read_bytes()
    (tmp / "cut.jpg").write_bytes(data[: len(data) // 3])
    return tmp / "cut.jpg"


def face_jpeg(tmp: Path, name: str = "face.jpg") -> Path:
    face_image(0).convert("RGB").save(tmp / name, format="JPEG", quality=95)
    return tmp / name


def fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "pipe.jpg")
    return tmp / "pipe.jpg"


def prepared_without_rows(tmp: Path) -> Path:
    folder = tmp / "prepared"
    folder.mkdir()
    (folder / PREPARED_MANIFEST).write_text(json.dumps({"format": PREPARED_FORMAT, "rows_written": 0}))
    return folder


def non_prepared_folder(tmp: Path) -> Path:
    folder = tmp / "mine"
    folder.mkdir()
    (folder / "thesis.parquet").write_bytes(b"PAR1 precious")
    return folder


def plain_file(tmp: Path) -> Path:
    (tmp / "file").write_text("x")
    return tmp / "file"


def corrupt_summary(results: Path) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    (results / "summary.json").write_text('[{"family": "cnn", "task": "age"')  # cut mid-write
    return results


def np_uint16_ramp() -> np.ndarray:
    return (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
