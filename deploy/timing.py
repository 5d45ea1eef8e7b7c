"""Per-section timing of the control loop: p50 / p99 / max per section, overruns, missed deadlines.

Durations go into a preallocated ring buffer (no allocation per tick); percentiles are computed only
when a report is asked for (on exit, on SIGUSR1, by ``sim2pi deploy check`` and the benchmark).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SECTIONS: tuple[str, ...] = ("sensors", "preprocess", "inference", "safety", "actuation")


@dataclass(frozen=True)
class SectionStats:
    """Summary of one section's durations, in milliseconds."""

    name: str
    n: int
    p50_ms: float
    p99_ms: float
    max_ms: float


class LoopTimes:
    """Ring buffer of per-tick section durations plus the tick's total work and lateness.

    ``period`` is the control period in seconds (``None`` when unpaced): a tick whose work exceeds
    it is an *overrun*; a tick that starts later than its deadline by more than ``period`` is a
    *missed deadline*.
    """

    def __init__(
        self,
        sections: Sequence[str] = SECTIONS,
        *,
        period: float | None = None,
        capacity: int = 65536,
    ):
        self.sections = tuple(sections)
        self.period = period
        self._cols = len(self.sections) + 1  # + total work
        self._buf = np.zeros((capacity, self._cols), dtype=np.float64)
        self._n = 0
        self.overruns = 0
        self.missed_deadlines = 0

    def __len__(self) -> int:
        return min(self._n, self._buf.shape[0])

    def add(self, durations: Sequence[float]) -> None:
        """Record one tick: the duration (s) of each section, in ``sections`` order."""
        row = self._buf[self._n % self._buf.shape[0]]
        total = 0.0
        for i, d in enumerate(durations):
            row[i] = d
            total += d
        row[-1] = total
        self._n += 1
        if self.period is not None and total > self.period:
            self.overruns += 1

    def miss(self) -> None:
        """Count a missed deadline (the loop had to skip at least one period)."""
        self.missed_deadlines += 1

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self._n = 0
        self.overruns = 0
        self.missed_deadlines = 0

    def column(self, name: str) -> np.ndarray:
        """The recorded durations (s) of one section, or ``"total"``, or ``"overhead"`` (total
        minus inference: the loop's own cost)."""
        data = self._buf[: len(self)]
        if name == "total":
            return data[:, -1].copy()
        if name == "overhead":
            i = self.sections.index("inference")
            return data[:, -1] - data[:, i]
        return data[:, self.sections.index(name)].copy()

    def stats(self) -> list[SectionStats]:
        """p50 / p99 / max per section, then ``total`` and ``overhead``."""
        out = []
        names = [*self.sections, "total"]
        if "inference" in self.sections:
            names.append("overhead")
        for name in names:
            col = self.column(name)
            if col.size == 0:
                out.append(SectionStats(name, 0, float("nan"), float("nan"), float("nan")))
                continue
            p50, p99 = np.percentile(col, [50, 99])
            out.append(
                SectionStats(
                    name, int(col.size), 1e3 * float(p50), 1e3 * float(p99), 1e3 * float(col.max())
                )
            )
        return out

    def summary(self) -> dict[str, object]:
        """JSON-friendly summary (for ``--json`` and the benchmark)."""
        return {
            "ticks": len(self),
            "overruns": self.overruns,
            "missed_deadlines": self.missed_deadlines,
            "period_ms": None if self.period is None else 1e3 * self.period,
            "sections": {
                s.name: {"n": s.n, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "max_ms": s.max_ms}
                for s in self.stats()
            },
        }

    def report(self) -> str:
        """A plain-text table of the timing, for logs and the terminal."""
        lines = [f"{'section':<11} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"]
        for s in self.stats():
            lines.append(f"{s.name:<11} {s.p50_ms:8.3f} {s.p99_ms:8.3f} {s.max_ms:8.3f}")
        period = "unpaced" if self.period is None else f"period {1e3 * self.period:.1f} ms"
        lines.append(
            f"{len(self)} ticks, {period}, {self.overruns} overruns, "
            f"{self.missed_deadlines} missed deadlines"
        )
        return "\n".join(lines)
