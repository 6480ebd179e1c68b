"""The `facetune` console script: every subcommand has --help, and missing data is one clear line."""
from __future__ import annotations

import pytest

from facetune.cli import COMMAND_MODULES, main

SUBCOMMANDS = [name.replace("_", "-") for name in COMMAND_MODULES]


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_each_subcommand_has_help(subcommand, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, "--help"])
    assert exit_info.value.code == 0
    assert "usage: facetune " + subcommand in capsys.readouterr().out


def test_missing_source_is_one_line_and_exit_code_2(tmp_path, capsys):
    code = main(["prepare", str(tmp_path / "nowhere.csv"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "data not found" in err and "nowhere.csv" in err
    assert not (tmp_path / "out").exists()


def test_sweep_with_missing_data_is_one_line_and_exit_code_2(tmp_path, capsys):
    code = main(["tune", "--profile", "smoke", "--data", str(tmp_path / "missing"), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "data not found" in err



def test_a_reader_that_goes_away_ends_the_command_quietly():
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write, as after `| head -1`
    try:
        done = subprocess.run([sys.executable, "-m", "facetune.cli", "predict", "--about"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert done.stderr == ""
