"""A report as data (sections of text, tables and figures) rendered to Markdown and to one HTML file.

The Markdown links the PNGs under figures/; the HTML embeds them as base64 so it can be mailed
or opened anywhere on its own.
"""
from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import pandas as pd


@dataclass
class Text:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Image:
    path: Path  # relative to the report's folder
    caption: str


Block = Union[Text, Bullets, Table, Image]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


@dataclass
class Report:
    title: str
    sections: list[Section]

    def images(self) -> list[Image]:
        return [block for section in self.sections for block in section.blocks if isinstance(block, Image)]


def format_cell(value: object) -> str:
    """Tables show numbers compactly; missing values as an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        return format_cell(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def to_markdown(report: Report) -> str:
    lines = [f"# {report.title}", ""]
    lines += [f"- [{s.title}](#{s.anchor})" for s in report.sections if s.level == 2] + [""]
    for section in report.sections:
        lines += [f"{'#' * section.level} {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                lines += [block.text, ""]
            elif isinstance(block, Bullets):
                lines += [f"- {item}" for item in block.items] + [""]
            elif isinstance(block, Table):
                if block.caption:
                    lines += [f"*{block.caption}*", ""]
                lines += [_markdown_table(block.frame), ""]
            elif isinstance(block, Image):
                lines += [f"![{block.caption}]({block.path.as_posix()})", "", f"*{block.caption}*", ""]
    return "\n".join(lines)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
figure { display: inline-block; vertical-align: top; margin: 0.5em 1em 0.5em 0; }  /* small figures sit side by side */
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .caption { font-size: 0.85em; color: #555; }
nav ul { columns: 2; }
"""


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_cell(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(report: Report, base_dir: Path) -> str:
    """The whole report as one HTML page; image paths are read from `base_dir` and embedded."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(report.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1><nav><ul>",
        *[f"<li><a href='#{s.anchor}'>{html.escape(s.title)}</a></li>" for s in report.sections if s.level == 2],
        "</ul></nav>",
    ]
    for section in report.sections:
        parts.append(f"<h{section.level} id='{section.anchor}'>{html.escape(section.title)}</h{section.level}>")
        for block in section.blocks:
            if isinstance(block, Text):
                parts.append(f"<p>{html.escape(block.text)}</p>")
            elif isinstance(block, Bullets):
                parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>")
            elif isinstance(block, Table):
                if block.caption:
                    parts.append(f"<p class='caption'>{html.escape(block.caption)}</p>")
                parts.append(_html_table(block.frame))
            elif isinstance(block, Image):
                data = base64.b64encode((base_dir / block.path).read_bytes()).decode("ascii")
                parts.append(
                    f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(block.caption, quote=True)}' "
                    f"data-file='{html.escape(block.path.as_posix(), quote=True)}'>"
                    f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
                )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: Report, out_dir: Path, results_csv: pd.DataFrame) -> dict[str, Path]:
    """Write report.md, report.html and results.csv into `out_dir` (figures must already be there)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "report.md", "html": out_dir / "report.html", "csv": out_dir / "results.csv"}
    paths["md"].write_text(to_markdown(report))
    paths["html"].write_text(to_html(report, out_dir))
    results_csv.to_csv(paths["csv"], index=False)
    return paths
