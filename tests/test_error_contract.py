"""The error contract of every command, as a matrix: bad or unusual input in, one clear answer out.

A user error is one line on stderr (`facetune COMMAND: ...`) naming the input and the reason,
with the exit code from facetune.errors; never a traceback. prepare keeps rows_read = written +
rejected with every reject listed; predict gives every input a prediction row or a reject row.
No case starts Ray: tune is refused before Ray starts.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

import error_cases as ec
from facetune.cli import main
from facetune.errors import EXIT_NO_DATA, EXIT_OK, EXIT_OUTPUT, EXIT_USAGE
from facetune.records import PREPARED_MANIFEST
from predict_fixture import build_results_dir

pytestmark = pytest.mark.usefixtures("no_figures")


@dataclass
class Env:
    """What every case may use: its own folder, a results dir with tiny models, a prepared dataset."""

    tmp: Path
    models: Path
    prepared: Path

    @property
    def out(self) -> Path:
        return self.tmp / "out"


@dataclass
class Case:
    id: str
    argv: Callable[[Env], list[str]]
    code: int
    message: str  # a regex the last stderr line must match

    def param(self):
        return pytest.param(self, id=self.id)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return build_results_dir(tmp_path_factory.mktemp("models"), ec.FACES["pixels"], ec.FACES)


@pytest.fixture
def env(tmp_path, models, prepared_data) -> Env:
    return Env(tmp_path, models, prepared_data)


def run(argv: list[str], capsys) -> tuple[int, list[str], str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's errors
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def assert_one_clear_line(lines: list[str], command: str, pattern: str, only: bool = True) -> None:
    assert lines, "nothing on stderr"
    assert not any("Traceback" in line for line in lines)
    if only:
        assert len(lines) == 1, lines
    # argparse's errors about the command line as a whole come from `facetune` itself
    assert re.match(rf"facetune( {command})?: ", lines[-1]), lines[-1]
    assert re.search(pattern, lines[-1]), lines[-1]
    assert lines[-1].isprintable()


# -------------------------------------------------------------------------------------------- prepare


def prepare(source: Callable[[Path], Path], *extra: str) -> Callable[[Env], list[str]]:
    return lambda env: ["prepare", str(source(env.tmp)), "--out", str(env.out), *extra]


def prepare_into(target: Callable[[Path], Path], *extra: str) -> Callable[[Env], list[str]]:
    return lambda env: ["prepare", str(ec.good_csv(env.tmp)), "--out", str(target(env.tmp)), *extra]


PREPARE_ERRORS = [
    Case("missing-source", lambda env: ["prepare", str(env.tmp / "nowhere.csv"), "--out", str(env.out)],
         EXIT_USAGE, r"data not found: .*nowhere\.csv does not exist"),
    Case("not-a-csv-name", prepare(lambda tmp: ec.plain_file(tmp)), EXIT_NO_DATA, r"file: not a Kaggle CSV"),
    Case("png-named-csv", prepare(ec.png_named_csv), EXIT_NO_DATA, r"picture\.csv: not a text CSV \(binary"),
    Case("text-named-gz", prepare(ec.text_named_gz), EXIT_NO_DATA, r"faces\.csv\.gz: cannot read as CSV"),
    Case("empty-csv", prepare(ec.empty_csv), EXIT_NO_DATA, r"empty\.csv: empty file"),
    Case("header-only-csv", prepare(ec.header_only_csv), EXIT_NO_DATA, r"header\.csv: no rows"),
    Case("wrong-columns", prepare(ec.wrong_columns_csv), EXIT_NO_DATA, r"other\.csv: missing column\(s\) age"),
    Case("all-rows-bad", prepare(ec.csv_all_rows_bad), EXIT_NO_DATA,
         r"allbad\.csv: no usable rows \(4 read, 4 rejected; first: line 2: 2299 pixel values"),
    Case("empty-folder", prepare(ec.empty_folder), EXIT_NO_DATA, r"empty: folder holds no files"),
    Case("folder-without-faces", prepare(ec.folder_without_faces), EXIT_NO_DATA, r"notes: no usable rows \(2 read"),
    Case("already-prepared", lambda env: ["prepare", str(env.prepared), "--out", str(env.out)],
         EXIT_NO_DATA, r"already a prepared directory"),
    Case("strict-bad-row", prepare(ec.csv_plus_sign_pixel, "--strict"), EXIT_NO_DATA, r"bad row .*line 5"),
    Case("out-is-a-file", prepare_into(ec.plain_file), EXIT_OUTPUT, r"--out .*file: exists and is a file"),
    Case("out-not-empty", prepare_into(ec.non_prepared_folder), EXIT_OUTPUT,
         r"--out .*mine: folder is not empty and holds no prepared dataset.*--overwrite"),
    Case("out-is-source", lambda env: ["prepare", str(ec.utk_folder(env.tmp)), "--out", str(env.tmp / "UTKFace")],
         EXIT_OUTPUT, r"overlaps the input"),
    Case("out-inside-source",
         lambda env: ["prepare", str(ec.utk_folder(env.tmp)), "--out", str(env.tmp / "UTKFace" / "prepared")],
         EXIT_OUTPUT, r"overlaps the input"),
    Case("seed-negative", prepare(ec.good_csv, "--seed", "-1"), EXIT_USAGE, r"--seed -1: must be a whole number from 0"),
    Case("seed-too-big", prepare(ec.good_csv, "--seed", str(2**32)), EXIT_USAGE, r"--seed 4294967296"),
    Case("seed-not-a-number", prepare(ec.good_csv, "--seed", "abc"), EXIT_USAGE, r"argument --seed: invalid int"),
    Case("unknown-flag", prepare(ec.good_csv, "--bogus"), EXIT_USAGE, r"unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("case", [c.param() for c in PREPARE_ERRORS])
def test_prepare_refuses_with_one_line(case: Case, env: Env, capsys):
    code, lines, _ = run(case.argv(env), capsys)
    assert code == case.code
    # argparse's own errors name the program as `facetune prepare` too
    assert_one_clear_line(lines, "prepare", case.message)
    if case.id != "out-is-a-file" and case.id != "out-not-empty":
        assert not env.out.exists() or not any(env.out.iterdir())


def test_a_refused_out_keeps_what_was_there(env: Env, capsys):
    folder = ec.non_prepared_folder(env.tmp)
    code, _, _ = run(["prepare", str(ec.good_csv(env.tmp)), "--out", str(folder)], capsys)
    assert code == EXIT_OUTPUT
    assert (folder / "thesis.parquet").read_bytes() == b"PAR1 precious"


@dataclass
class Accepted:
    """A prepare run that succeeds while rejecting some rows: (source pattern, reason pattern) each."""

    id: str
    source: Callable[[Path], Path]
    rejects: list[tuple[str, str]]
    written: int

    def param(self):
        return pytest.param(self, id=self.id)


PREPARE_WITH_REJECTS = [
    Accepted("extra-field", ec.csv_extra_field, [("line 4", r"^line 4: 6 field\(s\), expected 5$")], 11),
    Accepted("missing-fields", ec.csv_missing_fields, [("line 6", r"^line 6: 2 field\(s\), expected 5$")], 11),
    Accepted("invalid-utf8", ec.csv_invalid_utf8, [("line 3", r"^line 3: invalid UTF-8 in img_name$")], 11),
    Accepted("blank-lines", ec.csv_blank_lines_then_bad_row, [(r"_2017", r"^line 10: age 'x\d+' is not an integer$")], 11),
    Accepted("plus-sign-pixel", ec.csv_plus_sign_pixel,
             [(r"_2017", r"^line 5: pixel value '\+\d+' at position 0 is not written as a plain")], 11),
    Accepted("blank-face-row", ec.csv_blank_face, [(r"_2017", r"^line 8: image too uniform to be a face")], 11),
    Accepted("gz", ec.gz_csv, [], 10),
    Accepted("crlf-and-bom", ec.csv_crlf_with_bom, [], 12),
    Accepted("all-fields-quoted", ec.csv_all_fields_quoted, [], 12),
    Accepted("stray-quote", ec.csv_stray_quote, [(r"_2017", r"^line 4: ethnicity 3\d is outside 0\.\.4$")], 11),
    Accepted("nested-folders", ec.nested_folder, [], 9),
    Accepted("symlinks", ec.folder_with_symlinks, [
        (r"^1_0_0_2017\d+\.jpg\.chip\.jpg$", r"broken symlink"),
        (r"^self_a$", r"symlink loop"),
        (r"^self_b$", r"symlink loop"),
        (r"^sub/loop$", r"folder already listed"),
    ], 5),
    Accepted("odd-images", ec.folder_with_odd_images, [
        (r"^40_0_0_.*\.png$", r"image too small \(1x1"),
        (r"^41_0_0_.*\.png$", r"image too uniform"),
        (r"^42_0_0_.*\.jpg$", r"image too uniform"),
        (r"^43_0_0_.*\.jpg$", r"not an image"),
        (r"^README\.txt$", r"file name does not match"),
    ], 5),
]


@pytest.mark.parametrize("case", [c.param() for c in PREPARE_WITH_REJECTS])
def test_prepare_rejects_bad_rows_alone_and_lists_every_one(case: Accepted, env: Env, capsys):
    code, lines, out = run(["prepare", str(case.source(env.tmp)), "--out", str(env.out)], capsys)
    assert code == EXIT_OK, lines
    assert not any("Traceback" in line for line in lines)
    manifest = json.loads((env.out / PREPARED_MANIFEST).read_text())
    assert manifest["rows_read"] == manifest["rows_written"] + manifest["rows_rejected"]
    assert manifest["rows_written"] == case.written
    assert manifest["rows_rejected"] == len(manifest["rejected"]) == len(case.rejects)
    listed = sorted(manifest["rejected"], key=lambda r: r["source"])
    for reject, (source, reason) in zip(listed, case.rejects):
        assert re.search(source, reject["source"]), reject
        assert re.search(reason, reject["reason"]), reject
    assert f"wrote {case.written:,}, rejected {len(case.rejects)}" in out


def test_nested_folders_record_the_path_relative_to_the_root(env: Env, capsys):
    import pyarrow.dataset as pa_ds

    run(["prepare", str(ec.nested_folder(env.tmp)), "--out", str(env.out)], capsys)
    sources = set(pa_ds.dataset(env.out, exclude_invalid_files=True).to_table().column("source").to_pylist())
    assert f"part2/deeper/{ec.utk_name(4)}" in sources and f"part1/{ec.utk_name(0)}" in sources
    assert ec.utk_name(8) in sources


def test_overwrite_replaces_a_non_prepared_folder(env: Env, capsys):
    folder = ec.non_prepared_folder(env.tmp)
    code, _, _ = run(["prepare", str(ec.good_csv(env.tmp)), "--out", str(folder), "--overwrite"], capsys)
    assert code == EXIT_OK
    assert not (folder / "thesis.parquet").exists() and (folder / PREPARED_MANIFEST).is_file()


def test_a_prepared_folder_is_replaced_without_asking(env: Env, capsys):
    assert run(["prepare", str(ec.good_csv(env.tmp, 30)), "--out", str(env.out)], capsys)[0] == EXIT_OK
    assert run(["prepare", str(ec.csv_extra_field(env.tmp)), "--out", str(env.out)], capsys)[0] == EXIT_OK
    assert json.loads((env.out / PREPARED_MANIFEST).read_text())["rows_read"] == 12
    assert [p.name for p in env.tmp.iterdir() if p.name.startswith(".out.")] == []  # no leftovers


# -------------------------------------------------------------------------------------------- predict


def predict(*inputs: Callable[[Env], Path | str], extra: tuple[str, ...] = ()) -> Callable[[Env], list[str]]:
    return lambda env: ["predict", *[str(make(env)) for make in inputs], "--models", str(env.models),
                        "--out", str(env.out / "p.csv"), "--quiet", "--no-ray", *extra]


def at_tmp(builder: Callable[[Path], Path]) -> Callable[[Env], Path]:
    return lambda env: builder(env.tmp)


NOTHING_READABLE = r"no readable face in the input\(s\): \d+ reject\(s\), reasons in .*p\.rejects\.csv"
PREDICT_NOTHING_READABLE = [
    Case("one-corrupt-jpeg", predict(at_tmp(ec.corrupt_jpeg)), EXIT_NO_DATA, NOTHING_READABLE),
    Case("a-non-image", predict(at_tmp(ec.plain_file)), EXIT_NO_DATA, NOTHING_READABLE),
    Case("empty-folder", predict(at_tmp(ec.empty_folder)), EXIT_NO_DATA, NOTHING_READABLE),
    Case("folder-without-faces", predict(at_tmp(ec.folder_without_faces)), EXIT_NO_DATA, NOTHING_READABLE),
    Case("all-bad-csv", predict(at_tmp(ec.csv_all_rows_bad)), EXIT_NO_DATA, NOTHING_READABLE),
    Case("png-named-csv", predict(at_tmp(ec.png_named_csv)), EXIT_NO_DATA, NOTHING_READABLE),
    Case("empty-prepared-folder", predict(at_tmp(ec.prepared_without_rows)), EXIT_NO_DATA, NOTHING_READABLE),
]


@pytest.mark.parametrize("case", [c.param() for c in PREDICT_NOTHING_READABLE])
def test_predict_with_nothing_readable_still_writes_the_rejects(case: Case, env: Env, capsys):
    code, lines, _ = run(case.argv(env), capsys)
    assert code == case.code
    assert_one_clear_line(lines, "predict", case.message, only=False)
    rejects = pd.read_csv(env.out / "p.rejects.csv")
    assert len(rejects) >= 1 and rejects["reason"].str.len().min() > 0
    assert pd.read_csv(env.out / "p.csv").empty


PREDICT_ERRORS = [
    Case("missing-input", predict(lambda env: env.tmp / "nowhere.jpg"), EXIT_USAGE, r"input not found: .*nowhere\.jpg"),
    Case("images-and-csv-mixed", predict(at_tmp(ec.corrupt_jpeg), at_tmp(ec.good_csv)), EXIT_USAGE, r"INPUTs mix"),
    Case("split-on-images", predict(at_tmp(ec.corrupt_jpeg), extra=("--split", "test")), EXIT_USAGE,
         r"--split applies to prepared"),
    Case("out-is-input-csv", lambda env: ["predict", str(ec.good_csv(env.tmp)), "--models", str(env.models),
                                          "--out", str(env.tmp / "faces.csv"), "--quiet"],
         EXIT_OUTPUT, r"--out .*faces\.csv: would overwrite the input"),
    Case("out-is-a-folder", lambda env: ["predict", str(ec.good_csv(env.tmp)), "--models", str(env.models),
                                         "--out", str(env.tmp), "--quiet"],
         EXIT_OUTPUT, r"--out .*: is a folder"),
    Case("models-missing", lambda env: ["predict", str(ec.good_csv(env.tmp)), "--models", str(env.tmp / "none"),
                                        "--out", str(env.out / "p.csv")],
         EXIT_USAGE, r"--models .*none: .*summary\.json not found"),
    Case("models-corrupt-summary", lambda env: ["predict", str(ec.good_csv(env.tmp)), "--models",
                                                str(ec.corrupt_summary(env.tmp / "r")), "--out", str(env.out / "p.csv")],
         EXIT_NO_DATA, r"--models .*r: cannot load the models"),
    Case("unknown-family", predict(at_tmp(ec.good_csv), extra=("--family", "resnet9000")), EXIT_USAGE,
         r"--family resnet9000: no such family in .*summary\.json \(it has: cnn, dnn\)"),
    Case("batch-size-zero", predict(at_tmp(ec.good_csv), extra=("--batch-size", "0")), EXIT_USAGE,
         r"--batch-size and --workers must be at least 1"),
    Case("out-is-a-device", lambda env: ["predict", str(ec.face_jpeg(env.tmp)), "--models", str(env.models),
                                         "--out", "/dev/full", "--quiet"],
         EXIT_OUTPUT, r"--out /dev/full: not a regular file"),
    Case("annotate-is-a-file", lambda env: predict(at_tmp(ec.face_jpeg), extra=(
        "--annotate", str(ec.plain_file(env.tmp))))(env), EXIT_OUTPUT, r"--annotate .*file: .*file is a file, not a folder"),
    Case("annotate-under-a-file", lambda env: predict(at_tmp(ec.face_jpeg), extra=(
        "--annotate", str(ec.plain_file(env.tmp) / "boxes")))(env), EXIT_OUTPUT,
         r"--annotate .*file/boxes: cannot create .*file/boxes \(Not a directory\)"),
]


@pytest.mark.parametrize("case", [c.param() for c in PREDICT_ERRORS])
def test_predict_refuses_before_predicting(case: Case, env: Env, capsys):
    code, lines, _ = run(case.argv(env), capsys)
    assert code == case.code
    assert_one_clear_line(lines, "predict", case.message)
    assert not (env.out / "p.csv").exists()


def test_predict_never_writes_over_an_input(env: Env, capsys):
    source = ec.good_csv(env.tmp)
    before = source.read_bytes()
    run(["predict", str(source), "--models", str(env.models), "--out", str(source), "--quiet"], capsys)
    assert source.read_bytes() == before


def test_a_rejects_file_named_like_the_input_is_refused(env: Env, capsys):
    source = ec.good_csv(env.tmp)
    named = source.rename(env.tmp / "p.rejects.csv")
    code, lines, _ = run(["predict", str(named), "--models", str(env.models), "--out", str(env.tmp / "p.csv")], capsys)
    assert code == EXIT_OUTPUT and "would overwrite the input" in lines[-1]


def every_input_answered(env: Env, expected_sources: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    predictions = pd.read_csv(env.out / "p.csv")
    rejects_path = env.out / "p.rejects.csv"
    rejects = pd.read_csv(rejects_path) if rejects_path.exists() else pd.DataFrame(columns=["source", "reason"])
    assert len(predictions) + len(rejects) == expected_sources
    return predictions, rejects


def test_predict_on_a_csv_without_labels_predicts_every_row(env: Env, capsys):
    code, _, _ = run(predict(at_tmp(ec.csv_without_labels))(env), capsys)
    assert code == EXIT_OK
    predictions, rejects = every_input_answered(env, 6)
    assert len(predictions) == 6 and rejects.empty
    assert predictions["source"].str.match(r"line \d+").all()


def test_predict_gives_faces_with_unknown_labels_a_prediction(env: Env, capsys):
    code, _, _ = run(predict(at_tmp(ec.csv_with_unknown_labels))(env), capsys)
    assert code == EXIT_OK
    predictions, _ = every_input_answered(env, 6)
    assert len(predictions) == 6


def test_predict_evaluate_scores_only_the_rows_with_labels(env: Env, capsys):
    code, _, out = run(predict(at_tmp(ec.csv_with_unknown_labels), extra=("--evaluate",))(env), capsys)
    assert code == EXIT_OK and "mae" in out
    # 6 rows, 2 of them without a usable age: age is scored on 4, the other tasks on 6
    assert re.search(r"^age\s+cnn\s+mae\s+\S+\s+\S+\s+4$", out, re.MULTILINE), out
    assert re.search(r"^gender\s+cnn\s+accuracy\s+\S+\s+\S+\s+6$", out, re.MULTILINE), out


def test_predict_lists_broken_and_looping_symlinks(env: Env, capsys):
    folder = ec.folder_with_symlinks(env.tmp)
    code, _, _ = run(predict(lambda _: folder)(env), capsys)
    assert code == EXIT_OK
    predictions, rejects = every_input_answered(env, 5 + 4)
    reasons = dict(zip(rejects["source"].str.rsplit("/", n=1).str[-1], rejects["reason"]))
    assert reasons["self_a"] == reasons["self_b"] == "symlink loop"
    assert "broken symlink" in reasons["1_0_0_20170000000099.jpg.chip.jpg"]
    assert "already listed" in reasons["loop"]


def test_predict_removes_a_stale_rejects_file(env: Env, capsys):
    stale = env.out / "p.rejects.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("source,reason\nold.jpg,from an earlier run\n")
    assert run(predict(at_tmp(ec.csv_without_labels))(env), capsys)[0] == EXIT_OK
    assert not stale.exists()


def test_predict_mixes_good_and_bad_images_into_rows_and_rejects(env: Env, capsys):
    folder = ec.folder_with_odd_images(env.tmp)
    code, _, _ = run(predict(lambda _: folder)(env), capsys)
    assert code == EXIT_OK
    predictions, rejects = every_input_answered(env, 10)
    assert len(predictions) == 5
    assert set(rejects["reason"].str.split(" ").str[0]) >= {"image", "not", "skipped:"}


def test_a_write_that_fails_midway_is_one_line_with_exit_4(env: Env):
    from facetune.commands.predict import write_outputs
    from facetune.errors import OutputError
    from facetune.predict.table import PredictionResult

    result = PredictionResult(pd.DataFrame({"source": ["a.jpg"], "age": [30.0]}))
    with pytest.raises(OutputError, match=r"^--out /dev/full: cannot write \(No space left on device\)$") as caught:
        write_outputs(result, Path("/dev/full"))  # a disk that fills up after the checks
    assert caught.value.exit_code == EXIT_OUTPUT


@pytest.mark.timeout(120)
def test_a_fifo_named_on_the_command_line_is_a_reject_not_a_hang(env: Env, capsys):
    import os
    import threading

    pipe, face = ec.fifo(env.tmp), ec.face_jpeg(env.tmp)
    done = threading.Event()

    def unblock() -> None:  # before the fix predict opened the FIFO and waited for a writer forever
        while not done.wait(5):
            try:
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass  # no reader waiting

    threading.Thread(target=unblock, daemon=True).start()
    try:
        code, _, _ = run(predict(lambda _: pipe, lambda _: face)(env), capsys)
    finally:
        done.set()
    assert code == EXIT_OK
    _, rejects = every_input_answered(env, 2)
    assert rejects["reason"].tolist() == ["not a regular file (a FIFO, socket or device)"]


def test_a_file_name_that_reads_as_a_formula_is_written_as_text(env: Env, capsys, monkeypatch):
    monkeypatch.chdir(env.tmp)
    ec.face_jpeg(env.tmp, "=cmd|' -c calc'!A0.jpg")
    code, _, _ = run(["predict", "=cmd|' -c calc'!A0.jpg", "--models", str(env.models), "--out", "p.csv", "--quiet"],
                     capsys)
    assert code == EXIT_OK
    row = (env.tmp / "p.csv").read_text().splitlines()[1]
    assert row.startswith("'=cmd|' -c calc'!A0.jpg,")  # a spreadsheet shows it, never runs it


def test_a_blank_image_among_photos_is_rejected_as_on_its_own(env: Env, capsys):
    from serve_fixture import face_photo
    from PIL import Image

    photo = face_photo(env.tmp / "photo.jpg")  # 320x240: goes through face detection
    Image.new("RGB", (64, 64), (255, 255, 255)).save(env.tmp / "blank.png")
    code, _, _ = run(predict(lambda _: photo, lambda _: env.tmp / "blank.png")(env), capsys)
    assert code == EXIT_OK
    _, rejects = every_input_answered(env, 2)
    assert rejects["reason"].str.startswith("image too uniform to be a face").tolist() == [True]


# ------------------------------------------------------------------------------------ tune, report, generate


def tune(*extra: str) -> Callable[[Env], list[str]]:
    return lambda env: ["tune", "--data", str(env.prepared), "--results", str(env.tmp / "r"), *extra]


def only_cnn_age_profile(tmp: Path) -> Path:
    from facetune.config_files import load_yaml

    profile = {**load_yaml("profiles/smoke.yaml"), "combinations": ["cnn/age"], "name": "one"}
    (tmp / "one.yaml").write_text(json.dumps(profile))
    return tmp / "one.yaml"


TUNE_ERRORS = [
    Case("unknown-profile", tune("--profile", "nope"), EXIT_USAGE,
         r"--profile nope: no such profile; available: .*local.*smoke"),
    Case("max-epochs-zero", tune("--profile", "smoke", "--set", "max_epochs=0"), EXIT_USAGE,
         r"smoke\.yaml with --set max_epochs=0: max_epochs 0: must be a whole number >= 1"),
    Case("no-cpus-per-trial", tune("--profile", "smoke", "--set", "trial_resources.cpu=0"), EXIT_USAGE,
         r"trial_resources\.cpu 0: must be a number of CPUs above 0"),
    Case("unknown-scheduler", tune("--profile", "smoke", "--set", "scheduler.type=fifo"), EXIT_USAGE,
         r"scheduler\.type 'fifo': must be asha"),
    Case("only-unknown", tune("--profile", "smoke", "--only", "cnn/foo"), EXIT_USAGE,
         r"--only cnn/foo: unknown combination 'cnn/foo': expected FAMILY/TASK"),
    Case("only-selects-nothing", lambda env: tune("--profile", str(only_cnn_age_profile(env.tmp)),
                                                  "--only", "dnn/age")(env),
         EXIT_USAGE, r"--only dnn/age: selects none of profile .*one\.yaml's combinations \(cnn/age\)"),
    Case("resume-corrupt-summary", lambda env: tune("--profile", "smoke", "--resume")(env)
         if ec.corrupt_summary(env.tmp / "r") else [], EXIT_NO_DATA, r"r/summary\.json: corrupt"),
    Case("corrupt-summary-without-resume", lambda env: tune("--profile", "smoke")(env)
         if ec.corrupt_summary(env.tmp / "r") else [], EXIT_NO_DATA, r"r/summary\.json: corrupt"),
    Case("missing-data", lambda env: ["tune", "--profile", "smoke", "--data", str(env.tmp / "none"),
                                      "--results", str(env.tmp / "r")], EXIT_USAGE, r"data not found"),
    Case("bad-gpu-choice", tune("--gpu", "maybe"), EXIT_USAGE, r"argument --gpu: invalid choice"),
    Case("results-is-a-file", lambda env: ["tune", "--profile", "smoke", "--data", str(env.prepared),
                                           "--results", str(ec.plain_file(env.tmp))],
         EXIT_OUTPUT, r"--results .*file: is a file, not a results folder"),
]

REPORT_ERRORS = [
    Case("missing-dir", lambda env: ["report", str(env.tmp / "none")], EXIT_USAGE, r"not a results directory"),
    Case("corrupt-summary", lambda env: ["report", str(ec.corrupt_summary(env.tmp / "r"))], EXIT_NO_DATA,
         r"summary\.json: corrupt"),
    Case("summary-not-a-list", lambda env: ["report", str(env.tmp)] if (env.tmp / "summary.json").write_text("{}")
         else [], EXIT_NO_DATA, r"summary\.json: expected a list of combinations"),
    Case("out-is-a-file", lambda env: ["report", str(env.models), "--out", str(ec.plain_file(env.tmp))],
         EXIT_OUTPUT, r"--out .*file: .*is a file"),
    Case("min-group-size-zero", lambda env: ["report", str(env.models), "--min-group-size", "0"], EXIT_USAGE,
         r"--min-group-size 0: must be at least 1"),
]


def generate(checkpoint: Callable[[Env], Path], *extra: str, out: str = "grid.png") -> Callable[[Env], list[str]]:
    return lambda env: ["generate", "--checkpoint", str(checkpoint(env)), "--out", str(env.tmp / out), *extra]


GENERATE_ERRORS = [
    Case("classifier-checkpoint", generate(lambda env: env.models / "cnn_age" / "model.pt"), EXIT_NO_DATA,
         r"--checkpoint .*model\.pt: not a cGAN generator checkpoint"),
    Case("text-file-checkpoint", generate(lambda env: ec.plain_file(env.tmp)), EXIT_NO_DATA,
         r"--checkpoint .*file: not a cGAN generator checkpoint"),
    Case("results-dir-without-generator", generate(lambda env: env.models), EXIT_USAGE,
         r"--checkpoint .*: .* holds neither generator\.pt"),
    Case("missing-checkpoint", generate(lambda env: env.tmp / "none.pt"), EXIT_USAGE,
         r"generator checkpoint not found"),
    Case("n-zero", generate(lambda env: env.models, "--n", "0"), EXIT_USAGE, r"--n 0: must be at least 1"),
    Case("bad-ages", generate(lambda env: env.models, "--ages", "30-20"), EXIT_USAGE, r"argument --ages: ages '30-20'"),
    Case("out-is-a-folder", generate(lambda env: env.models, out="."), EXIT_OUTPUT, r"--out .*: is a folder"),
    Case("out-not-an-image", generate(lambda env: env.models, out="grid.txt"), EXIT_OUTPUT,
         r"expected a \.png/\.jpg/\.jpeg file name"),
]


@pytest.mark.parametrize(
    "command, case",
    [pytest.param(command, c, id=f"{command}-{c.id}")
     for command, cases in (("tune", TUNE_ERRORS), ("report", REPORT_ERRORS), ("generate", GENERATE_ERRORS))
     for c in cases],
)
def test_tune_report_generate_refuse_with_one_line(command: str, case: Case, env: Env, capsys, monkeypatch):
    import ray

    started = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: started.append(1))  # refused before Ray, or it fails here
    code, lines, _ = run(case.argv(env), capsys)
    assert code == case.code
    assert_one_clear_line(lines, command, case.message)
    assert not started


def test_a_sweep_where_nothing_finished_exits_3_without_claiming_a_summary(env: Env, capsys, monkeypatch):
    monkeypatch.setattr("facetune.tuning.sweep.run_sweep", lambda *a, **k: [])
    code, lines, out = run(tune("--profile", "smoke", "--only", "cnn/age")(env), capsys)
    assert code == EXIT_NO_DATA
    assert_one_clear_line(lines, "tune", r"no combination finished .*cnn/age; nothing added to .*summary\.json")
    assert "sweep finished" not in out


# ------------------------------------------------------------------------- --device, train-release

DEVICE_ERRORS = [
    Case("predict-misspelt", predict(at_tmp(ec.good_csv), extra=("--device", "cdua")), EXIT_USAGE,
         r"--device cdua: not a device name; use auto, cpu, cuda, cuda:N or mps"),
    Case("predict-no-such-gpu", predict(at_tmp(ec.good_csv), extra=("--device", "cuda:99")), EXIT_USAGE,
         r"--device cuda:99: this machine has"),
    Case("predict-unsupported", predict(at_tmp(ec.good_csv), extra=("--device", "xla")), EXIT_USAGE,
         r"--device xla: not a device facetune runs on"),
    Case("serve-misspelt", lambda env: ["serve", "--models", str(env.models), "--device", "gpu0"], EXIT_USAGE,
         r"--device gpu0: not a device name"),
    Case("train-release-no-such-gpu", lambda env: train_release(env, "--device", "cuda:99"), EXIT_USAGE,
         r"--device cuda:99: this machine has"),
]

TRAIN_RELEASE_ERRORS = [
    Case("epochs-zero", lambda env: train_release(env, "--epochs", "0"), EXIT_USAGE,
         r"--epochs 0: must be at least 1 \(leave it out for the recipe's own\)"),
    Case("limit-negative", lambda env: train_release(env, "--limit", "-5"), EXIT_USAGE, r"--limit -5: must be at least 1"),
]


def train_release(env: Env, *extra: str) -> list[str]:
    return ["train-release", "--data", str(env.prepared), "--work", str(env.tmp / "work"), "--out", str(env.out), *extra]


@pytest.mark.parametrize("case", [c.param() for c in DEVICE_ERRORS + TRAIN_RELEASE_ERRORS])
def test_a_bad_device_or_run_size_is_refused_before_any_work(case: Case, env: Env, capsys, monkeypatch):
    import ray

    started = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: started.append(1))
    code, lines, _ = run(case.argv(env), capsys)
    assert code == case.code
    assert_one_clear_line(lines, case.argv(env)[0], case.message)
    assert not started and not (env.tmp / "work").exists() and not env.out.exists()
