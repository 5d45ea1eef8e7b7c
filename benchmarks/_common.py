"""Shared helpers for benchmark scripts: commit hash, machine load, results table."""

from __future__ import annotations

import datetime as _dt
import os
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=RESULTS.parent,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=RESULTS.parent,
        ).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load {a:.2f}/{b:.2f}/{c:.2f} on {os.cpu_count()} cores"


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells[1:]]
    return "\n".join(lines)


def _fmt(c: object) -> str:
    if isinstance(c, float):
        if c != c:
            return "n/a"
        return f"{c:.3g}" if abs(c) < 100 else f"{c:,.0f}"
    return str(c)


def append(title: str, body: str, notes: str = "") -> None:
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = f"\n## {title} — {stamp}, commit {commit()}, {load()}\n\n{body}\n"
    if notes:
        text += f"\n{notes}\n"
    with RESULTS.open("a") as fh:
        fh.write(text)
    print(text)
