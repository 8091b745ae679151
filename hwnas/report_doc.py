"""A small report document: headings, text, figures and tables, rendered as HTML and Markdown.

Each figure is saved as a PNG file and each table as a CSV file next to the report; the HTML embeds
the PNGs as base64 data URIs and carries its own CSS, so ``report.html`` opens offline on its own.
Nothing here knows about searches: :mod:`hwnas.report` decides what goes in.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from search_spaces.files import atomic_write_bytes, atomic_write_text

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 13px; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption, .caption { color: #555; font-size: 13px; }
"""


def format_value(v) -> str:
    """A table cell for people: empty for missing, thousands separators for whole numbers, 4 significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, float, np.integer, np.floating)):
        if float(v).is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:.4g}"
    return str(v)


@dataclass
class Doc:
    """An ordered list of blocks; ``figure``/``table`` also write their PNG/CSV into ``out``."""

    out: Path
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def figure(self, fig: Figure, name: str, caption: str) -> None:
        """Save ``fig`` as ``name`` (a .png file name) and show it with ``caption``."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        atomic_write_bytes(self.out / name, buf.getvalue())
        self.blocks.append(("img", name, caption, buf.getvalue()))

    def table(self, df: pd.DataFrame, name: str, caption: str = "") -> None:
        """Write ``df`` as ``name`` (a .csv file name) and show it formatted."""
        atomic_write_text(self.out / name, df.to_csv(index=False))
        self.blocks.append(("table", df, name, caption))

    def write(self) -> Path:
        """Write report.html and report.md; returns the HTML file's path."""
        atomic_write_text(self.out / "report.md", self.markdown())
        path = self.out / "report.html"
        atomic_write_bytes(path, self.html().encode("utf-8"))
        return path

    # -- rendering -------------------------------------------------------------------------------

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                lines += ["#" * block[1] + " " + block[2], ""]
            elif kind == "p":
                lines += [block[1], ""]
            elif kind == "img":
                lines += [f"![{block[2]}]({block[1]})", "", f"*{block[2]}*", ""]
            else:
                _, df, name, caption = block
                if caption:
                    lines += [caption, ""]
                lines += [_markdown_table(df), "", f"([{name}]({name}))", ""]
        return "\n".join(lines)

    def html(self) -> str:
        parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                 f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>",
                 f"<h1>{html.escape(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                parts.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
            elif kind == "p":
                parts.append(f"<p>{_inline_code(html.escape(block[1]))}</p>")
            elif kind == "img":
                data = base64.b64encode(block[3]).decode("ascii")
                parts.append(f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
            else:
                _, df, name, caption = block
                if caption:
                    parts.append(f'<p class="caption">{html.escape(caption)} ({html.escape(name)})</p>')
                parts.append(_html_table(df))
        parts.append("</body></html>")
        return "\n".join(parts)


def _inline_code(text: str) -> str:
    """Markdown's `code` spans as <code> (on already escaped text)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _cells(df: pd.DataFrame) -> list[list[str]]:
    return [[format_value(v) for v in row] for row in df.itertuples(index=False, name=None)]


def _markdown_table(df: pd.DataFrame) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(esc(str(c)) for c in df.columns) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(esc(c) for c in row) + " |" for row in _cells(df)]
    return "\n".join([head, rule, *body])


def _html_table(df: pd.DataFrame) -> str:
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for row in _cells(df):
        tds = "".join(f"<td>{html.escape(v)}</td>" if num else f'<td class="text">{html.escape(v)}</td>'
                      for v, num in zip(row, numeric))
        rows.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
