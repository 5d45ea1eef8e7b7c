"""Shared test configuration."""

from __future__ import annotations

import os

# Two shared cores: keep numeric libraries single-threaded in tests.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
