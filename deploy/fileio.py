"""Crash-safe file writes and JSON conversion shared by the dataset, bundles, run reports and
checkpoints. Standard library + numpy only (the runtime imports it at start-up)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

TMP_SUFFIX = ".tmp"


def fsync_file(path: str | Path) -> None:
    """fsync a file's contents."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """fsync a folder, so a rename inside it survives a power cut."""
    fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to ``path + .tmp``, fsync, ``os.replace``, fsync the folder: readers see the old file
    or the new one, never half of one. The temporary file is removed if the write fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(
    path: Path, obj: Any, *, indent: int = 2, default: Callable[[Any], Any] | None = None
) -> None:
    """:func:`atomic_write_bytes` of ``jsonable(obj)`` as JSON with a trailing newline
    (``default`` as in :func:`json.dumps`, for objects ``jsonable`` leaves alone)."""
    text = json.dumps(jsonable(obj), indent=indent, ensure_ascii=False, default=default)
    atomic_write_bytes(Path(path), (text + "\n").encode())


def jsonable(x: Any) -> Any:
    """Plain-JSON form, recursively: mappings (keys → str), lists/tuples → lists, numpy arrays and
    scalars → Python values, paths → str, other array-likes with ``tolist`` (torch tensors) → lists
    or scalars. Anything else is returned as is."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist"):
        return x.tolist()
    return x
