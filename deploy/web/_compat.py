"""Adapters to the runtime's interfaces (``deploy.teleop``), with minimal stand-ins until they exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

try:  # the DATA helper's command-source module
    from deploy.teleop import Command
except ImportError:  # pragma: no cover - only before deploy.teleop lands

    @dataclass(frozen=True)
    class Command:  # type: ignore[no-redef]
        """A command from a source: ``action`` (left, right), receipt ``stamp``, ``source`` name."""

        action: Any
        stamp: float
        source: str


__all__ = ["Command"]
