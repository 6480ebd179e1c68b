"""Every facetune command shown in README.md and docs/ parses with today's options.

Commands are read from the ```bash blocks (line continuations joined, comments dropped):
`facetune SUBCOMMAND ...`, `python jobs/NAME.py ...`, also after `&&` and after the `--` of a
`ray job submit`. Each is parsed by the same argparse parser the command uses, so a renamed or
removed option in the code fails here instead of in a reader's terminal. What a command does is
tested elsewhere; this keeps the pages honest about how to call it.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from facetune.cli import OneLineParser, build_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)


def job_command(script: str) -> str:
    """The facetune subcommand a jobs/ script runs (its `run_job(PROG, MODULE)` call)."""
    text = (REPO_ROOT / script).read_text()
    return re.search(r'run_job\("[^"]+", "(\w+)"\)', text).group(1).replace("_", "-")


def shown_commands(page: Path) -> list[list[str]]:
    """The facetune and jobs/ command lines of `page`'s bash blocks, as argument lists."""
    commands = []
    for block in BASH_BLOCK.findall(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            for part in " ".join(shlex.quote(w) for w in words).split(" '&&' "):
                words = shlex.split(part)
                if "--" in words and words[:1] == ["ray"]:
                    words = words[words.index("--") + 1:]
                if words[:1] == ["facetune"]:
                    commands.append(words[1:])
                elif words[:1] == ["python"] and len(words) > 1 and words[1].startswith("jobs/"):
                    commands.append([job_command(words[1]), *words[2:]])
    return commands


CASES = [(page.relative_to(REPO_ROOT).as_posix(), command) for page in PAGES for command in shown_commands(page)]


def test_the_pages_show_the_main_commands():
    shown = {command[0] for _, command in CASES}
    assert {"tune", "prepare", "predict", "report", "serve"} <= shown


@pytest.mark.parametrize(("page", "command"), CASES, ids=[f"{p}: {' '.join(c)[:60]}" for p, c in CASES])
def test_a_shown_command_parses(page, command):
    parser = build_parser(command[0])
    try:
        parser.parse_args(command)
    except SystemExit as exit:
        pytest.fail(f"{page}: `facetune {' '.join(command)}` does not parse (exit {exit.code})")


def test_a_removed_option_would_be_caught():
    with pytest.raises(SystemExit):
        build_parser("tune").parse_args(["tune", "--no-such-option"])
    assert isinstance(build_parser("tune"), OneLineParser)
