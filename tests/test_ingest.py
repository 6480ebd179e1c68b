"""facetune.data.ingest: both input layouts to arrays, every bad row rejected with its reason."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from facetune.data.images import load_gray48
from facetune.data.ingest import (
    SourceFormatError,
    detect_kind,
    parse_utkface_name,
    read_kaggle_csv,
    read_utkface_folder,
)
from facetune.data.pixel_text import parse_pixel_column


def corrupt_csv(clean: Path, out: Path) -> tuple[Path, dict[str, str]]:
    """Copy `clean` with one bad row per kind of damage; return the path and {img_name: reason}."""
    lines = clean.read_text().splitlines()
    expected: dict[str, str] = {}

    def damage(line_no: int, edit, reason: str) -> None:
        fields = lines[line_no].split(",")
        pixels = fields[4].split()
        edit(fields, pixels)
        fields[4] = " ".join(pixels)
        lines[line_no] = ",".join(fields)
        expected[fields[3]] = f"line {line_no + 1}: {reason}"

    damage(1, lambda f, p: p.pop(), "2303 pixel values, expected 2304")
    damage(2, lambda f, p: p.__setitem__(5, "abc"), "non-numeric pixel value 'abc' at position 5")
    damage(3, lambda f, p: p.__setitem__(0, "256"), "pixel value 256 at position 0 is outside 0..255")
    damage(4, lambda f, p: f.__setitem__(1, "7"), "ethnicity 7 is outside 0..4")
    damage(5, lambda f, p: f.__setitem__(0, "-1"), "age -1 is outside 0..116")
    damage(6, lambda f, p: f.__setitem__(2, "x"), "gender 'x' is not an integer")
    out.write_text("\n".join(lines) + "\n")
    return out, expected


def test_csv_round_trips_pixels_and_labels_exactly(kaggle_csv, faces):
    result = read_kaggle_csv(kaggle_csv)
    assert result.kind == "csv"
    assert result.rows_read == result.rows_written == len(faces["age"])
    np.testing.assert_array_equal(result.pixels, faces["pixels"])
    for label in ("age", "gender", "ethnicity"):
        np.testing.assert_array_equal(getattr(result, label), faces[label])


def test_gzipped_csv_reads_the_same_as_plain(kaggle_csv, tmp_path):
    gz = tmp_path / "age_gender.csv.gz"
    gz.write_bytes(gzip.compress(kaggle_csv.read_bytes()))
    np.testing.assert_array_equal(read_kaggle_csv(gz).pixels, read_kaggle_csv(kaggle_csv).pixels)


def test_each_bad_csv_row_is_rejected_with_its_reason(kaggle_csv, tmp_path, faces):
    path, expected = corrupt_csv(kaggle_csv, tmp_path / "bad.csv")
    result = read_kaggle_csv(path)
    assert {r.source: r.reason for r in result.rejected} == expected
    assert result.rows_read == len(faces["age"])
    assert result.rows_read == result.rows_written + len(result.rejected)
    assert not set(expected) & set(result.names)


def test_pixel_parser_handles_several_and_sliced_arrow_chunks():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (7, 2304), dtype=np.uint8)
    texts = [" ".join(map(str, row)) for row in pixels]
    texts[4] = "  " + texts[4].replace(" ", "  ", 3) + " "  # stray spaces separate, they are not values
    texts[6] = texts[6] + " "
    column = pa.chunked_array([pa.array(texts[:3]), pa.array(["junk"] + texts[3:]).slice(1)])
    parsed, bad = parse_pixel_column(column)
    assert bad.tolist() == []
    np.testing.assert_array_equal(parsed, pixels)


def test_csv_without_the_kaggle_columns_is_a_format_error(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(SourceFormatError, match="missing column"):
        read_kaggle_csv(path)


def test_detect_kind_accepts_folders_and_csv_only(tmp_path):
    assert detect_kind(tmp_path) == "utkface"
    assert detect_kind(tmp_path / "x.csv.gz") == "csv"
    with pytest.raises(SourceFormatError):
        detect_kind(tmp_path / "x.txt")


def test_a_prepared_directory_is_not_mistaken_for_an_image_folder(prepared_data):
    with pytest.raises(SourceFormatError, match="already a prepared directory"):
        detect_kind(prepared_data)


def test_utkface_name_parsing():
    assert parse_utkface_name("26_1_3_20170119180431456.jpg.chip.jpg") == {"age": 26, "gender": 1, "ethnicity": 3}
    # A real UTKFace file carries a stray space after the datetime; its labels are intact.
    assert parse_utkface_name("24_0_1_20170116220224657 .jpg.chip.jpg")["ethnicity"] == 1
    with pytest.raises(ValueError, match="61_1_20170109142408075.jpg.chip.jpg: file name does not match"):
        parse_utkface_name("61_1_20170109142408075.jpg.chip.jpg")
    with pytest.raises(ValueError, match="ethnicity 7 is outside 0..4"):
        parse_utkface_name("20_0_7_20170119180431456.jpg.chip.jpg")


def test_folder_labels_come_from_names_and_pixels_from_images(utkface_folder, faces):
    result = read_utkface_folder(utkface_folder, progress=False)
    assert result.kind == "utkface"
    assert result.rows_read == result.rows_written == 60
    first = sorted(utkface_folder.iterdir())[0]
    assert result.names[0] == first.name
    np.testing.assert_array_equal(result.pixels[0], load_gray48(first).reshape(-1))
    index = int(first.name.split("_")[3][4:14])  # synthetic names end in 2017<index>
    assert (result.age[0], result.gender[0], result.ethnicity[0]) == (
        faces["age"][index], faces["gender"][index], faces["ethnicity"][index],
    )


def test_bad_files_in_a_folder_are_rejected_naming_the_file(tmp_path):
    folder = tmp_path / "UTKFace"
    folder.mkdir()
    good = folder / "30_0_2_20170101000000001.jpg.chip.jpg"
    noise = np.random.default_rng(0).integers(40, 200, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise, "RGB").save(good, format="JPEG")
    data = good.read_bytes()
    (folder / "31_1_0_20170101000000002.jpg.chip.jpg").write_bytes(data[: len(data) // 2])
    (folder / "32_0_1_20170101000000003.jpg.chip.jpg").write_text("not a jpeg")
    (folder / "61_1_20170109142408075.jpg.chip.jpg").write_bytes(data)

    result = read_utkface_folder(folder, progress=False)
    reasons = {r.source: r.reason for r in result.rejected}
    assert reasons == {
        "31_1_0_20170101000000002.jpg.chip.jpg": "31_1_0_20170101000000002.jpg.chip.jpg: truncated image",
        "32_0_1_20170101000000003.jpg.chip.jpg": "32_0_1_20170101000000003.jpg.chip.jpg: not an image",
        "61_1_20170109142408075.jpg.chip.jpg": "61_1_20170109142408075.jpg.chip.jpg: file name does not match "
        "[age]_[gender]_[race]_[datetime].jpg.chip.jpg",
    }
    assert result.names.tolist() == [good.name]
    assert result.rows_read == 4 == result.rows_written + len(result.rejected)
