"""facetune.errors and cli.run_command: user errors are one printable line and a documented code."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from facetune.cli import OneLineParser, run_command
from facetune.errors import EXIT_INTERRUPTED, EXIT_NO_DATA, EXIT_OUTPUT, NoDataError, OutputError, one_line

REPO = Path(__file__).resolve().parents[1]


def test_one_line_escapes_control_characters_and_newlines():
    assert one_line("bad\nname\x00.csv: \x1b[31mred") == "bad name\\x00.csv: \\x1b[31mred"


def test_one_line_cuts_long_messages():
    text = one_line("x" * 5000)
    assert len(text) == 600 and text.endswith("...")


def test_a_user_error_becomes_its_line_and_exit_code(capsys):
    def fails(_args):
        raise OutputError("--out x: is a folder")

    assert run_command("facetune demo", fails, None) == EXIT_OUTPUT
    assert capsys.readouterr().err == "facetune demo: --out x: is a folder\n"


def test_a_file_name_with_a_newline_stays_on_one_line(capsys):
    def fails(_args):
        raise NoDataError("evil\nname.csv: no usable rows")

    assert run_command("facetune demo", fails, None) == EXIT_NO_DATA
    assert capsys.readouterr().err.count("\n") == 1


def test_a_bug_keeps_its_traceback():
    def bug(_args):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_command("facetune demo", bug, None)


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    def interrupted(_args):
        raise KeyboardInterrupt

    assert run_command("facetune demo", interrupted, None) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "facetune demo: interrupted\n"


def test_argument_errors_are_one_line_with_exit_code_2(capsys):
    parser = OneLineParser(prog="facetune demo")
    parser.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--n", "many"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("facetune demo: argument --n: invalid int value")


def test_tune_all_job_follows_the_same_contract(tmp_path):
    done = subprocess.run(
        [sys.executable, "jobs/tune_all.py", "--profile", "nope", "--data", str(tmp_path), "--results", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("tune_all.py: --profile nope: no such profile") and done.stderr.count("\n") == 1


JOBS = sorted(path.name for path in (REPO / "jobs").glob("*.py"))


@pytest.mark.parametrize("script", JOBS)
def test_every_job_script_is_a_facetune_command_under_its_own_name(script, capsys, monkeypatch):
    import runpy

    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "jobs" / script), run_name="__main__")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {script} ")


def test_train_release_job_reports_missing_data_in_one_line(tmp_path, capsys):
    from facetune.cli import run_job

    code = run_job("train_release.py", "train_release", ["--data", str(tmp_path / "none"), "--work", str(tmp_path / "w"),
                                                         "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"train_release.py: data not found: {tmp_path / 'none'} does not exist") and err.count("\n") == 1


def test_train_cgan_job_refuses_an_existing_run_in_one_line(tmp_path, prepared_data, capsys):
    from facetune.cgan.train import run_dir
    from facetune.cli import run_job

    run_dir(tmp_path / "run").mkdir(parents=True)
    code = run_job("train_cgan.py", "train_cgan", ["--profile", "smoke", "--data", str(prepared_data),
                                                   "--results", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("train_cgan.py: ") and "already holds a run" in err and err.count("\n") == 1
