"""Episode datasets in the LeRobot v3.0 layout: a crash-safe writer and a numpy reader.

Layout (what ``LeRobotDataset`` opens)::

    DIR/meta/info.json                      codebase_version "v3.0", fps, features, counters, paths
    DIR/meta/stats.json                     stats/<feature>/<stat> aggregated over all episodes
    DIR/meta/tasks.parquet                  one row per task string (pandas index "task"), task_index
    DIR/meta/episodes/chunk-XXX/file-XXX.parquet    one row per episode (row k is episode k)
    DIR/data/chunk-XXX/file-XXX.parquet             frames: the non-video features, in info order
    DIR/videos/<key>/chunk-XXX/file-XXX.mp4         camera frames, h264/yuv420p, frame k at k/fps
    DIR/meta/sim2pi.json                    sim2pi's own copy of the spec and settings (for repair)
    DIR/meta/writer.lock                    flock held by the one writer

Columns: the spec's observation features under their ``dataset_key`` (``observation.state``,
``observation.achieved_goal``, ``observation.desired_goal``, ``observation.task_id``, video
``observation.images.front``), ``action`` (what the command source asked for: for the scripted expert
its clean action, before DART noise), ``action_applied`` (what the motors got: noise included, after the
safety layer),
``next.reward``, ``next.success``, ``next.done``, ``intervention`` (a human took over from a policy),
and LeRobot's ``timestamp`` (= frame_index / fps), ``frame_index``, ``episode_index``, ``index``,
``task_index``. ``info.json`` also carries ``sim2pi`` = {spec, robot_hash, robot description, encoder
settings} so readers get the spec back.

Crash safety, by construction. Files are numbered by *slot* s (chunk s // 1000, file s % 1000); a
recorded episode gets the next free slot for its data file, its video files and its episode-metadata
file. ``save_episode`` writes each file under a temporary name (``file-XXX.parquet.tmp``: it does not
end in ``.parquet``, does not start with a dot and sits beside its final name, so LeRobot's
``sorted(glob("*/*.parquet"))`` never sees it), fsyncs it and renames it, in this order: data, videos,
tasks.parquet (only for a new task), the episode-metadata file (**the commit point**), then
``stats.json`` and ``info.json`` (write, fsync, ``os.replace``, fsync the directory), both derived from
the committed episode rows. :func:`recover` (run by :meth:`DatasetWriter.open` and, when no writer
holds the lock, by :meth:`Dataset.open`) removes temporary files and files of an uncommitted episode,
and rewrites the derived metadata from the committed rows; :func:`repair` rebuilds all metadata from
the data and video files; :func:`compact` merges episodes into few large files (crash-safe too: the
new episode-metadata file supersedes the old ones, the file with the highest slot wins a duplicate).

Reading: :class:`Dataset` (numpy only, no torch) is the one reader BC and HER training use::

    ds = Dataset.open("runs/demos")
    ep = ds.episode(0)
    ep["observation"], ep["action"], ep["image"]   # (T, 6) float32, (T, 2) float32, (T, H, W, 3) uint8
    ep.task_text                                   # the task string
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deploy.fileio import atomic_write_json as _write_json
from deploy.fileio import fsync_dir, fsync_file
from deploy.video import (
    QUANTILE_KEYS,
    QUANTILES,
    EncoderSettings,
    ImageStats,
    VideoEncoder,
    concat_videos,
    decode_frames,
    probe_video,
    video_info,
)
from hardware.errors import DatasetError, SpecMismatch
from hardware.spec import Spec

logger = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder: file-000 .. file-999, then the next chunk
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 500
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
SIM2PI_PATH = "meta/sim2pi.json"
LOCK_PATH = "meta/writer.lock"
EPISODES_DIR = "meta/episodes"
DATA_DIR = "data"
VIDEO_DIR = "videos"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = DATA_DIR + "/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = VIDEO_DIR + "/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
TMP_SUFFIX = ".tmp"
QUARANTINE_DIR = "quarantine"
_CHUNK_RE = re.compile(r"^chunk-(\d{3})$")
_FILE_RE = re.compile(r"^file-(\d{3})\.(parquet|mp4)$")

# LeRobot adds these to every dataset (dtype, shape, names).
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
# frame / episode key -> dataset column, besides the spec's observation features
EXTRA_COLUMNS = {
    "action": "action",
    "action_applied": "action_applied",
    "reward": "next.reward",
    "success": "next.success",
    "done": "next.done",
    "intervention": "intervention",
}
OPTIONAL_FRAME_KEYS = {"action_applied", "intervention"}
STAT_KEYS = ("min", "max", "mean", "std", "count", *QUANTILE_KEYS)


# ----------------------------------------------------------------------------------------------
# small helpers


def slot_to_chunk_file(slot: int) -> tuple[int, int]:
    """Slot s lives in chunk s // 1000, file s % 1000."""
    return slot // CHUNKS_SIZE, slot % CHUNKS_SIZE


def chunk_file_to_slot(chunk_index: int, file_index: int) -> int:
    return int(chunk_index) * CHUNKS_SIZE + int(file_index)


def data_rel(slot: int) -> str:
    c, f = slot_to_chunk_file(slot)
    return DATA_PATH.format(chunk_index=c, file_index=f)


def video_rel(key: str, slot: int) -> str:
    c, f = slot_to_chunk_file(slot)
    return VIDEO_PATH.format(video_key=key, chunk_index=c, file_index=f)


def episodes_rel(slot: int) -> str:
    c, f = slot_to_chunk_file(slot)
    return EPISODES_PATH.format(chunk_index=c, file_index=f)


def tmp_path(path: Path) -> Path:
    """The temporary name of ``path``: same folder, ``.tmp`` appended (never ``*.parquet``)."""
    return path.with_name(path.name + TMP_SUFFIX)


def commit_file(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, rename it to ``final`` and fsync the folder."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Crash-safe JSON, indented like LeRobot's own meta files."""
    _write_json(path, obj, indent=4)


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    pq.write_table(table, tmp, compression="snappy")
    commit_file(tmp, path)


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------------------------
# features and schemas


def build_features(spec: Spec) -> dict[str, dict[str, Any]]:
    """LeRobot feature dicts for ``spec``, in column order: observations (spec order), action,
    action_applied, next.reward, next.success, next.done, intervention, then LeRobot's defaults."""
    feats: dict[str, dict[str, Any]] = {}
    for f in spec.observation.values():
        if f.is_image:
            feats[f.dataset_key] = {
                "dtype": "video",
                "shape": list(f.shape),
                "names": ["height", "width", "channels"],
                "info": None,
            }
        else:
            feats[f.dataset_key] = {
                "dtype": f.dtype,
                "shape": list(f.shape),
                "names": list(f.names) if f.names else None,
            }
    a = spec.action
    names = list(a.names) if a.names else None
    feats["action"] = {"dtype": a.dtype, "shape": list(a.shape), "names": names}
    feats["action_applied"] = {"dtype": a.dtype, "shape": list(a.shape), "names": names}
    feats["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    feats["next.success"] = {"dtype": "bool", "shape": [1], "names": None}
    feats["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    feats["intervention"] = {"dtype": "bool", "shape": [1], "names": None}
    for k, v in DEFAULT_FEATURES.items():
        feats[k] = dict(v)
    return feats


def frame_columns(spec: Spec) -> dict[str, str]:
    """Reader / frame key -> dataset column (spec keys, then the extra keys)."""
    cols = {k: f.dataset_key for k, f in spec.observation.items()}
    cols.update(EXTRA_COLUMNS)
    return cols


def _arrow_scalar(dtype: str) -> pa.DataType:
    if dtype == "bool":
        return pa.bool_()
    return pa.from_numpy_dtype(np.dtype(dtype))


def data_schema(features: Mapping[str, Mapping[str, Any]]) -> pa.Schema:
    """Arrow schema of a data file: the non-video features in order; shape (1,) is a scalar
    column, shape (D,) a fixed-size list of D values (what HF ``datasets`` makes of
    ``Sequence(length=D)``)."""
    fields = []
    for key, ft in features.items():
        if ft["dtype"] in ("video", "image"):
            continue
        shape = tuple(ft["shape"])
        t = _arrow_scalar(ft["dtype"])
        if shape == (1,):
            fields.append(pa.field(key, t))
        elif len(shape) == 1:
            fields.append(pa.field(key, pa.list_(t, shape[0])))
        else:
            raise DatasetError(f"feature '{key}': shape {shape} is not supported in a data column")
    return pa.schema(fields)


def video_keys(features: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [k for k, ft in features.items() if ft["dtype"] == "video"]


def _stat_type(ft: Mapping[str, Any], stat: str) -> pa.DataType:
    if stat == "count":
        return pa.list_(pa.int64())
    if ft["dtype"] in ("video", "image"):
        return pa.list_(pa.list_(pa.list_(pa.float64())))
    return pa.list_(pa.float64())


def episodes_schema(features: Mapping[str, Mapping[str, Any]]) -> pa.Schema:
    """Arrow schema of an episode-metadata file (one row per episode)."""
    fields = [
        pa.field("episode_index", pa.int64()),
        pa.field("tasks", pa.list_(pa.string())),
        pa.field("length", pa.int64()),
        pa.field("data/chunk_index", pa.int64()),
        pa.field("data/file_index", pa.int64()),
        pa.field("dataset_from_index", pa.int64()),
        pa.field("dataset_to_index", pa.int64()),
    ]
    for vk in video_keys(features):
        fields += [
            pa.field(f"videos/{vk}/chunk_index", pa.int64()),
            pa.field(f"videos/{vk}/file_index", pa.int64()),
            pa.field(f"videos/{vk}/from_timestamp", pa.float64()),
            pa.field(f"videos/{vk}/to_timestamp", pa.float64()),
        ]
    fields += [
        pa.field("meta/episodes/chunk_index", pa.int64()),
        pa.field("meta/episodes/file_index", pa.int64()),
    ]
    for key, ft in features.items():
        for stat in STAT_KEYS:
            fields.append(pa.field(f"stats/{key}/{stat}", _stat_type(ft, stat)))
    return pa.schema(fields)


def _np_to_arrow(arr: np.ndarray, ft: Mapping[str, Any]) -> pa.Array:
    shape = tuple(ft["shape"])
    t = _arrow_scalar(ft["dtype"])
    if shape == (1,):
        return pa.array(arr.reshape(-1).astype(ft["dtype"]), type=t)
    flat = pa.array(arr.reshape(-1).astype(ft["dtype"]), type=t)
    return pa.FixedSizeListArray.from_arrays(flat, shape[0])


def _arrow_to_np(col: pa.ChunkedArray | pa.Array, ft: Mapping[str, Any]) -> np.ndarray:
    """A data column as numpy: (T,) for shape (1,), (T, D) for shape (D,)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    shape = tuple(ft["shape"])
    dtype = np.dtype(ft["dtype"])
    if shape == (1,):
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=dtype).reshape(n)
    if pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type):
        values = arr.flatten().to_numpy(zero_copy_only=False)
        return np.asarray(values, dtype=dtype).reshape(n, *shape)
    raise DatasetError(f"column has type {arr.type}, expected a list of {shape[0]}")


# ----------------------------------------------------------------------------------------------
# statistics (LeRobot's conventions: per-dimension min/max/mean/std/count + quantiles)


def numeric_stats(arr: np.ndarray) -> dict[str, np.ndarray]:
    """Stats of a (T,) or (T, D) array over frames; shape (1,) or (D,); ``count`` = (T,)."""
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    a = a.reshape(a.shape[0], -1)
    with np.errstate(all="ignore"):
        out = {
            "min": np.nanmin(a, axis=0) if a.size else np.zeros(a.shape[1]),
            "max": np.nanmax(a, axis=0) if a.size else np.zeros(a.shape[1]),
            "mean": np.nanmean(a, axis=0),
            "std": np.nanstd(a, axis=0),
        }
        qs = np.nanquantile(a, QUANTILES, axis=0)
    out["count"] = np.array([a.shape[0]], np.int64)
    for name, q in zip(QUANTILE_KEYS, qs, strict=True):
        out[name] = q
    return out


def aggregate_stats(
    stats_list: list[dict[str, dict[str, np.ndarray]]],
) -> dict[str, dict[str, np.ndarray]]:
    """Combine per-episode stats: min of mins, max of maxes, count-weighted mean, pooled variance;
    quantiles are count-weighted means of the episodes' quantiles (LeRobot does the same)."""
    keys: list[str] = []
    for s in stats_list:
        keys += [k for k in s if k not in keys]
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in keys:
        items = [s[key] for s in stats_list if key in s]
        counts = np.array([float(np.asarray(s["count"]).reshape(-1)[0]) for s in items])
        total = counts.sum()
        means = np.stack([np.asarray(s["mean"], np.float64) for s in items])
        w = counts.reshape(-1, *([1] * (means.ndim - 1)))
        mean = (means * w).sum(axis=0) / total
        var = (
            (np.stack([np.asarray(s["std"], np.float64) for s in items]) ** 2 + (means - mean) ** 2)
            * w
        ).sum(axis=0) / total
        agg = {
            "min": np.min(np.stack([np.asarray(s["min"], np.float64) for s in items]), axis=0),
            "max": np.max(np.stack([np.asarray(s["max"], np.float64) for s in items]), axis=0),
            "mean": mean,
            "std": np.sqrt(var),
            "count": np.array([int(total)], np.int64),
        }
        for q in QUANTILE_KEYS:
            if all(q in s for s in items):
                agg[q] = (np.stack([np.asarray(s[q], np.float64) for s in items]) * w).sum(
                    axis=0
                ) / total
        out[key] = agg
    return out


def stats_to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    def clean(v: Any) -> Any:
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return {k: {s: clean(np.asarray(v).tolist()) for s, v in d.items()} for k, d in stats.items()}


def stats_from_json(obj: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    return {
        k: {s: np.asarray(v, dtype=np.float64 if s != "count" else np.int64) for s, v in d.items()}
        for k, d in obj.items()
    }


def row_stats(row: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """The per-episode stats stored in an episode-metadata row (``stats/<feature>/<stat>``)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for k, v in row.items():
        if not k.startswith("stats/") or v is None:
            continue
        _, rest = k.split("/", 1)
        feat, stat = rest.rsplit("/", 1)
        out.setdefault(feat, {})[stat] = np.asarray(v, np.int64 if stat == "count" else np.float64)
    return out


def _flatten_stats(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for feat, d in stats.items():
        for stat, v in d.items():
            flat[f"stats/{feat}/{stat}"] = np.asarray(v).tolist()
    return flat


# ----------------------------------------------------------------------------------------------
# tasks.parquet (a pandas frame indexed by the task string, so LeRobot's ``tasks.iloc[i].name`` works)


def tasks_table(tasks: list[str]) -> pa.Table:
    schema = pa.schema([pa.field("task_index", pa.int64()), pa.field("task", pa.string())])
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    # metadata attached after construction: building a table from a schema with pandas metadata
    # imports pandas when it is installed (slow), and the Pi has no pandas anyway
    t = pa.Table.from_arrays(
        [pa.array(range(len(tasks)), pa.int64()), pa.array(tasks, pa.string())], schema=schema
    )
    return t.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def write_tasks(root: Path, tasks: list[str]) -> None:
    write_parquet_atomic(tasks_table(tasks), root / TASKS_PATH)


def read_tasks(root: Path) -> list[str]:
    """Task strings ordered by task_index (which must be 0, 1, ...)."""
    path = root / TASKS_PATH
    if not path.exists():
        return []
    try:
        t = pq.read_table(path)
    except Exception as e:
        raise DatasetError(f"{TASKS_PATH}: cannot read ({type(e).__name__}: {e})") from None
    if "task" not in t.column_names or "task_index" not in t.column_names:
        raise DatasetError(
            f"{TASKS_PATH}: needs columns 'task' and 'task_index', has {t.column_names}"
        )
    idx = t.column("task_index").to_pylist()
    if idx != list(range(len(idx))):
        raise DatasetError(
            f"{TASKS_PATH}: rows must be sorted by task_index 0..{len(idx) - 1}, got {idx[:10]}"
        )
    return [str(x) for x in t.column("task").to_pylist()]


# ----------------------------------------------------------------------------------------------
# locking and file discovery


class DatasetLock:
    """An exclusive ``flock`` on ``meta/writer.lock``: one writer (or repair/compact) at a time.
    The kernel drops it when the process dies, so a killed recorder never leaves a stale lock."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_PATH
        self._fd: int | None = None

    def acquire(self, *, blocking: bool = False) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


@contextlib.contextmanager
def _locked(root: Path, what: str) -> Iterator[DatasetLock]:
    lock = DatasetLock(root)
    if not lock.acquire():
        raise DatasetError(
            f"{root}: another process is writing this dataset; {what} needs it alone"
        )
    try:
        yield lock
    finally:
        lock.release()


def _slot_files(folder: Path, suffix: str) -> list[tuple[int, Path]]:
    """(slot, path) of ``chunk-XXX/file-XXX<suffix>`` under ``folder``, sorted like LeRobot's glob."""
    out = []
    for p in sorted(folder.glob(f"*/*{suffix}")):
        cm = _CHUNK_RE.match(p.parent.name)
        fm = _FILE_RE.match(p.name)
        if cm and fm:
            out.append((chunk_file_to_slot(int(cm.group(1)), int(fm.group(1))), p))
    return out


def _tmp_files(root: Path) -> list[Path]:
    out: list[Path] = []
    for sub in ("data", "meta", "videos"):
        d = root / sub
        if d.exists():
            out += [p for p in d.rglob(f"*{TMP_SUFFIX}") if p.is_file()]
    return sorted(out)


def _video_keys_on_disk(root: Path) -> list[str]:
    d = root / VIDEO_DIR
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.exists() else []


# ----------------------------------------------------------------------------------------------
# metadata loading


def load_info(root: Path) -> dict[str, Any]:
    path = root / INFO_PATH
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(
            f"{root}: no {INFO_PATH}; not a dataset (or run `sim2pi dataset repair`)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(
            f"{INFO_PATH}: not valid JSON ({e}); run `sim2pi dataset repair`"
        ) from None
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        raise DatasetError(f"{INFO_PATH}: has no 'features' mapping; run `sim2pi dataset repair`")
    return info


@dataclass
class MetaFile:
    slot: int
    path: Path
    rows: list[dict[str, Any]]


def read_meta_files(root: Path) -> list[MetaFile]:
    """All episode-metadata files, in LeRobot's glob order. Raises on an unreadable file."""
    out = []
    for slot, p in _slot_files(root / EPISODES_DIR, ".parquet"):
        try:
            rows = pq.read_table(p).to_pylist()
        except Exception as e:
            raise DatasetError(
                f"{_rel(root, p)}: cannot read the episode metadata "
                f"({type(e).__name__}: {e}); run `sim2pi dataset repair`"
            ) from None
        out.append(MetaFile(slot, p, rows))
    return out


def resolve_rows(metas: list[MetaFile]) -> tuple[list[dict[str, Any]], list[MetaFile]]:
    """Committed rows by episode (when an episode is in several files, the highest slot wins, as
    after an interrupted compaction) and the files whose rows are all superseded."""
    best: dict[int, tuple[int, dict[str, Any]]] = {}
    for m in metas:
        for r in m.rows:
            e = int(r["episode_index"])
            if e not in best or m.slot > best[e][0]:
                best[e] = (m.slot, r)
    superseded = [
        m
        for m in metas
        if m.rows and all(best[int(r["episode_index"])][0] != m.slot for r in m.rows)
    ]
    rows = [best[e][1] for e in sorted(best)]
    return rows, superseded


def _row_files(root: Path, row: Mapping[str, Any], vkeys: list[str]) -> list[tuple[int, Path]]:
    files = [
        (
            chunk_file_to_slot(row["data/chunk_index"], row["data/file_index"]),
            root / data_rel(chunk_file_to_slot(row["data/chunk_index"], row["data/file_index"])),
        )
    ]
    for vk in vkeys:
        s = chunk_file_to_slot(row[f"videos/{vk}/chunk_index"], row[f"videos/{vk}/file_index"])
        files.append((s, root / video_rel(vk, s)))
    return files


def _row_slots(row: Mapping[str, Any], vkeys: list[str]) -> list[int]:
    slots = [
        chunk_file_to_slot(row["data/chunk_index"], row["data/file_index"]),
        chunk_file_to_slot(row["meta/episodes/chunk_index"], row["meta/episodes/file_index"]),
    ]
    slots += [
        chunk_file_to_slot(row[f"videos/{vk}/chunk_index"], row[f"videos/{vk}/file_index"])
        for vk in vkeys
    ]
    return slots


def build_info(
    features: dict[str, Any],
    fps: int,
    sim2pi: dict[str, Any],
    robot_type: str | None,
    rows: Sequence[Mapping[str, Any]],
    n_tasks: int,
) -> dict[str, Any]:
    """info.json from the features and the committed rows (the counters are derived)."""
    total_frames = int(sum(int(r["length"]) for r in rows))
    has_video = bool(video_keys(features))
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": len(rows),
        "total_frames": total_frames,
        "total_tasks": n_tasks,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
        "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
        "fps": int(fps),
        "splits": {"train": f"0:{len(rows)}"} if rows else {},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if has_video else None,
        "features": features,
        "sim2pi": sim2pi,
    }


def _fill_video_info(root: Path, info: dict[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
    for vk in video_keys(info["features"]):
        ft = info["features"][vk]
        if ft.get("info") or not rows:
            continue
        r = rows[0]
        s = chunk_file_to_slot(r[f"videos/{vk}/chunk_index"], r[f"videos/{vk}/file_index"])
        ft["info"] = video_info(root / video_rel(vk, s), int(info["fps"]))


def _write_derived(
    root: Path, info: dict[str, Any], rows: Sequence[Mapping[str, Any]], n_tasks: int
) -> dict[str, Any]:
    """Rewrite stats.json and info.json from the committed rows (stats first, info last)."""
    new = build_info(
        info["features"],
        int(info["fps"]),
        info.get("sim2pi", {}),
        info.get("robot_type"),
        rows,
        n_tasks,
    )
    _fill_video_info(root, new, rows)
    if rows:
        stats = aggregate_stats([row_stats(r) for r in rows])
        atomic_write_json(root / STATS_PATH, stats_to_json(stats))
    else:
        (root / STATS_PATH).unlink(missing_ok=True)
    atomic_write_json(root / INFO_PATH, new)
    return new


# ----------------------------------------------------------------------------------------------
# recovery after a crash


@dataclass
class RecoveryReport:
    removed: list[str] = field(default_factory=list)
    rewrote_metadata: bool = False
    episodes: int = 0

    def __bool__(self) -> bool:
        return bool(self.removed) or self.rewrote_metadata


def recover(root: str | Path, *, _lock_held: bool = False) -> RecoveryReport:
    """Undo what an interrupted writer left: temporary files, files of an uncommitted episode (or of
    an uncommitted compaction), superseded episode-metadata files, and derived metadata
    (info/stats) that lags behind the committed episode rows. Never deletes a file a committed row
    references, nor an unreferenced file it cannot explain (``validate`` reports those)."""
    root = Path(root)
    ctx = contextlib.nullcontext() if _lock_held else _locked(root, "recovery")
    report = RecoveryReport()
    with ctx:
        for p in _tmp_files(root):
            p.unlink(missing_ok=True)
            report.removed.append(_rel(root, p))
        info = load_info(root)
        if "sim2pi" not in info:
            raise DatasetError(f"{INFO_PATH}: not written by sim2pi; refusing to touch its files")
        vkeys = video_keys(info["features"])
        metas = read_meta_files(root)
        rows, superseded = resolve_rows(metas)
        for i, r in enumerate(rows):
            if int(r["episode_index"]) != i:
                raise DatasetError(
                    f"episode {i}: missing from {EPISODES_DIR} (found episode "
                    f"{r['episode_index']} next); run `sim2pi dataset repair`"
                )
        referenced = {p for r in rows for _, p in _row_files(root, r, vkeys)}
        max_slot = max((s for r in rows for s in _row_slots(r, vkeys)), default=-1)
        stale = {p for m in superseded for r in m.rows for _, p in _row_files(root, r, vkeys)}
        candidates = [(s, p) for s, p in _slot_files(root / DATA_DIR, ".parquet")]
        for vk in vkeys:
            candidates += _slot_files(root / VIDEO_DIR / vk, ".mp4")
        for s, p in candidates:
            if p in referenced:
                continue
            if s > max_slot or p in stale:
                p.unlink()
                report.removed.append(_rel(root, p))
        for m in superseded:
            m.path.unlink()
            report.removed.append(_rel(root, m.path))
        for folder in [
            root / DATA_DIR,
            root / EPISODES_DIR,
            *[root / VIDEO_DIR / vk for vk in vkeys],
        ]:
            if folder.exists():
                for d in folder.iterdir():
                    if d.is_dir() and _CHUNK_RE.match(d.name) and not any(d.iterdir()):
                        d.rmdir()
        tasks = read_tasks(root)
        expected = build_info(
            info["features"],
            int(info.get("fps", 0)),
            info.get("sim2pi", {}),
            info.get("robot_type"),
            rows,
            len(tasks),
        )
        counters = ("total_episodes", "total_frames", "total_tasks", "splits")
        stats_ok = (root / STATS_PATH).exists() == bool(rows)
        if any(info.get(k) != expected[k] for k in counters) or not stats_ok:
            _write_derived(root, info, rows, len(tasks))
            report.rewrote_metadata = True
        report.episodes = len(rows)
    if report:
        logger.info(
            "recovered %s: removed %d leftover file(s)%s",
            root,
            len(report.removed),
            ", rewrote info/stats" if report.rewrote_metadata else "",
        )
    return report


# ----------------------------------------------------------------------------------------------
# the writer


class DatasetWriter:
    """Records episodes into a LeRobot v3.0 dataset, crash-safely (see the module docstring).

    Use :meth:`create` for a new dataset and :meth:`open` to append to an existing one (after
    cleaning what an interrupted recording left). One writer per dataset (an flock enforces it).

    Control-loop API: ``start_episode(task)``, ``add_frame(frame)`` once per control tick,
    ``save_episode() -> episode index`` or ``discard_episode()``, ``close()``. A frame is a dict with
    the spec's observation keys (``observation``, ``achieved_goal``, ``desired_goal``, ``image``,
    ``task``, ... as the spec says) plus ``action``, ``reward``, ``success``, ``done`` and optionally
    ``action_applied`` (default: ``action``) and ``intervention`` (default: False). Camera frames
    are handed to a per-camera encoder thread; ``add_frame`` only checks and buffers. The methods
    take a lock, so a status thread may read :attr:`episode_frames` while the loop records.
    """

    def __init__(
        self, root: Path, info: dict[str, Any], lock: DatasetLock, *, encoder: EncoderSettings
    ) -> None:
        self.root = root
        self.info = info
        self._lock = lock
        self._mutex = threading.RLock()
        self.spec = Spec.from_dict(info["sim2pi"]["spec"])
        self.fps = int(info["fps"])
        self.features: dict[str, dict[str, Any]] = info["features"]
        self.encoder = encoder
        self._columns = frame_columns(self.spec)
        self._vkeys = video_keys(self.features)
        self._schema = data_schema(self.features)
        metas = read_meta_files(root)
        self._rows, _ = resolve_rows(metas)
        self._stats = [row_stats(r) for r in self._rows]
        self._tasks = read_tasks(root)
        used = [s for r in self._rows for s in _row_slots(r, self._vkeys)]
        self._next_slot = max(used, default=-1) + 1
        self._closed = False
        self._reset_episode()

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        spec: Spec,
        fps: float,
        *,
        robot: Any = None,
        video_codec: str = "h264",
        encoder: EncoderSettings | None = None,
        overwrite: bool = False,
    ) -> DatasetWriter:
        """Create an empty dataset at ``path`` for ``spec`` recorded at ``fps`` (an integer rate).

        ``robot``: the :class:`~hardware.description.RobotDescription` (its name, hash and fields
        go into info.json), or None. ``video_codec``: ``h264`` (default), ``hevc`` or ``libsvtav1``.
        """
        root = Path(path)
        if float(fps) != int(fps) or int(fps) <= 0:
            raise DatasetError(
                f"fps must be a positive integer (LeRobot stores an integer fps), got {fps}"
            )
        if root.exists() and any(root.iterdir()):
            if not overwrite:
                raise DatasetError(
                    f"{root} already exists and is not empty; use DatasetWriter.open "
                    "(`--resume`) to append, or choose another folder"
                )
            shutil.rmtree(root)
        enc = encoder or EncoderSettings(codec=video_codec)
        if encoder is not None and video_codec != encoder.codec:
            enc = EncoderSettings(**{**encoder.to_dict(), "codec": video_codec})
        from deploy.video import codec_available

        if spec.image_keys and not codec_available(enc.codec):
            raise DatasetError(f"video codec '{enc.codec}' is not available in this PyAV build")
        for k in spec.image_keys:
            f = spec.observation[k]
            if f.shape[2] != 3:
                raise SpecMismatch(k, "shape", "(H, W, 3)", f.shape, "camera images are RGB")
        (root / "meta").mkdir(parents=True, exist_ok=True)
        lock = DatasetLock(root)
        if not lock.acquire():
            raise DatasetError(f"{root}: another process is writing this dataset")
        try:
            robot_hash = getattr(robot, "hash", None) or spec.robot_hash
            sim2pi = {
                "format": "sim2pi-dataset",
                "version": 1,
                "spec": spec.to_dict(),
                "robot_hash": robot_hash,
                "robot": robot.to_dict()
                if robot is not None and hasattr(robot, "to_dict")
                else None,
                "encoder": enc.to_dict(),
                "frame_columns": frame_columns(spec),
            }
            features = build_features(spec)
            robot_type = getattr(robot, "name", None) or spec.robot or None
            info = build_info(features, int(fps), sim2pi, robot_type, [], 0)
            atomic_write_json(
                root / SIM2PI_PATH,
                {"features": features, "fps": int(fps), "robot_type": robot_type, "sim2pi": sim2pi},
            )
            write_tasks(root, [])
            atomic_write_json(root / INFO_PATH, info)
        except BaseException:
            lock.release()
            raise
        logger.info(
            "created dataset %s (%s, %d fps, features %s)",
            root,
            spec.task,
            int(fps),
            list(features),
        )
        return cls(root, info, lock, encoder=enc)

    @classmethod
    def open(cls, path: str | Path) -> DatasetWriter:
        """Open an existing dataset to append episodes, after removing leftovers of an interrupted
        recording. Raises :class:`DatasetError` when another writer holds it."""
        root = Path(path)
        if not (root / INFO_PATH).exists():
            raise DatasetError(
                f"{root}: no {INFO_PATH}; create the dataset first (without --resume)"
            )
        lock = DatasetLock(root)
        if not lock.acquire():
            raise DatasetError(f"{root}: another process is writing this dataset")
        try:
            recover(root, _lock_held=True)
            info = load_info(root)
            if "sim2pi" not in info or "spec" not in info["sim2pi"]:
                raise DatasetError(
                    f"{INFO_PATH}: no sim2pi spec; this dataset was not made by sim2pi"
                )
            enc = EncoderSettings.from_dict(info["sim2pi"].get("encoder"))
            return cls(root, info, lock, encoder=enc)
        except BaseException:
            lock.release()
            raise

    # -- state --------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.root

    @property
    def num_episodes(self) -> int:
        return len(self._rows)

    @property
    def num_frames(self) -> int:
        return int(sum(int(r["length"]) for r in self._rows))

    @property
    def tasks(self) -> list[str]:
        return list(self._tasks)

    @property
    def recording(self) -> bool:
        """True between start_episode and save/discard."""
        return self._task is not None

    @property
    def episode_frames(self) -> int:
        """Frames added to the current episode so far."""
        return self._n

    def _reset_episode(self) -> None:
        self._task: str | None = None
        self._n = 0
        self._buffers: dict[str, list[np.ndarray]] = {}
        self._encoders: dict[str, VideoEncoder] = {}

    def _check_open(self) -> None:
        if self._closed:
            raise DatasetError(f"{self.root}: the writer is closed")

    # -- recording ----------------------------------------------------------------------------

    def start_episode(self, task: str) -> int:
        """Begin episode ``num_episodes`` described by the task string; returns its index."""
        with self._mutex:
            self._check_open()
            if self.recording:
                raise DatasetError(
                    f"episode {self.num_episodes} is still being recorded; call "
                    "save_episode() or discard_episode() first"
                )
            if not isinstance(task, str) or not task:
                raise DatasetError("the task must be a non-empty string (e.g. 'reach the goal')")
            self._task = task
            self._n = 0
            self._buffers = {k: [] for k in self._columns}
            self._encoders = {}
            return self.num_episodes

    def add_frame(self, frame: Mapping[str, Any]) -> None:
        """Check one control tick against the spec and buffer it (images go to the encoder)."""
        with self._mutex:
            self._check_open()
            if not self.recording:
                raise DatasetError("call start_episode(task) before add_frame()")
            unknown = [k for k in frame if k not in self._columns]
            if unknown:
                raise SpecMismatch(
                    unknown[0],
                    "presence",
                    "absent",
                    "present",
                    f"frames hold only {list(self._columns)}",
                )
            values: dict[str, np.ndarray] = {}
            for key, feat in self.spec.observation.items():
                if key not in frame:
                    raise SpecMismatch(key, "presence", "present", "missing")
                values[key] = feat.check_array(frame[key])
            if "action" not in frame:
                raise SpecMismatch("action", "presence", "present", "missing")
            values["action"] = self.spec.action.check_array(frame["action"])
            applied = frame.get("action_applied", frame["action"])
            values["action_applied"] = self.spec.action.check_array(applied)
            for key in ("reward", "success", "done"):
                if key not in frame:
                    raise SpecMismatch(key, "presence", "present", "missing")
            values["reward"] = _scalar(frame["reward"], "reward", np.float32)
            values["success"] = _scalar(frame["success"], "success", np.bool_)
            values["done"] = _scalar(frame["done"], "done", np.bool_)
            values["intervention"] = _scalar(
                frame.get("intervention", False), "intervention", np.bool_
            )
            for key in self.spec.image_keys:
                enc = self._encoders.get(key)
                if enc is None:
                    feat = self.spec.observation[key]
                    enc = VideoEncoder(
                        tmp_path(self.root / video_rel(feat.dataset_key, self._next_slot)),
                        feat.shape[1],
                        feat.shape[0],
                        self.fps,
                        self.encoder,
                    )
                    enc.path.parent.mkdir(parents=True, exist_ok=True)
                    self._encoders[key] = enc
                enc.put(np.array(values.pop(key), dtype=np.uint8, copy=True))
            for key, v in values.items():
                self._buffers[key].append(np.array(v, copy=True))
            self._n += 1

    def discard_episode(self) -> None:
        """Drop the current episode (nothing of it stays on disk)."""
        with self._mutex:
            for enc in self._encoders.values():
                enc.abort()
            self._reset_episode()

    def save_episode(self) -> int:
        """Write the current episode crash-safely and return its index (see the module docstring
        for the order of writes). Raises :class:`DatasetError` for an empty episode."""
        with self._mutex:
            self._check_open()
            if not self.recording:
                raise DatasetError("no episode is being recorded; call start_episode(task) first")
            n, ep, slot, task = self._n, self.num_episodes, self._next_slot, self._task
            assert task is not None
            if n == 0:
                raise DatasetError(
                    f"episode {ep} has no frames; add frames or call discard_episode()"
                )
            t0 = time.perf_counter()
            results = {}
            try:
                for key, enc in self._encoders.items():
                    results[key] = enc.finish()
            except BaseException:
                self.discard_episode()
                raise
            for key, res in results.items():
                if res.frames != n:
                    self.discard_episode()
                    raise DatasetError(
                        f"episode {ep}: video '{key}' has {res.frames} frames, the data {n}"
                    )
            start = self.num_frames
            if task not in self._tasks:
                self._tasks.append(task)
                write_tasks(self.root, self._tasks)
            arrays: dict[str, np.ndarray] = {}
            for key, col in self._columns.items():
                if key in self.spec.image_keys:
                    continue
                arrays[col] = np.stack(self._buffers[key])
            arrays["timestamp"] = (np.arange(n, dtype=np.float64) / self.fps).astype(np.float32)
            arrays["frame_index"] = np.arange(n, dtype=np.int64)
            arrays["episode_index"] = np.full(n, ep, np.int64)
            arrays["index"] = np.arange(start, start + n, dtype=np.int64)
            arrays["task_index"] = np.full(n, self._tasks.index(task), np.int64)
            stats: dict[str, dict[str, np.ndarray]] = {}
            for key, ft in self.features.items():
                if ft["dtype"] == "video":
                    spec_key = next(k for k, c in self._columns.items() if c == key)
                    stats[key] = results[spec_key].stats
                else:
                    stats[key] = numeric_stats(arrays[key])
            table = pa.Table.from_arrays(
                [_np_to_arrow(arrays[c], self.features[c]) for c in self._schema.names],
                schema=self._schema,
            )
            write_parquet_atomic(table, self.root / data_rel(slot))
            for key, res in results.items():
                final = self.root / video_rel(self.spec.observation[key].dataset_key, slot)
                os.replace(res.path, final)
                fsync_dir(final.parent)
            chunk, file = slot_to_chunk_file(slot)
            row: dict[str, Any] = {
                "episode_index": ep,
                "tasks": [task],
                "length": n,
                "data/chunk_index": chunk,
                "data/file_index": file,
                "dataset_from_index": start,
                "dataset_to_index": start + n,
            }
            for vk in self._vkeys:
                row.update(
                    {
                        f"videos/{vk}/chunk_index": chunk,
                        f"videos/{vk}/file_index": file,
                        f"videos/{vk}/from_timestamp": 0.0,
                        f"videos/{vk}/to_timestamp": n / self.fps,
                    }
                )
            row["meta/episodes/chunk_index"] = chunk
            row["meta/episodes/file_index"] = file
            row.update(_flatten_stats(stats))
            meta_table = pa.Table.from_pylist([row], schema=episodes_schema(self.features))
            write_parquet_atomic(meta_table, self.root / episodes_rel(slot))  # the commit point
            self._rows.append(meta_table.to_pylist()[0])
            self._stats.append(stats)
            self._next_slot += 1
            self._write_metadata()
            self._reset_episode()
            logger.debug("saved episode %d (%d frames) in %.3f s", ep, n, time.perf_counter() - t0)
            return ep

    def _write_metadata(self) -> None:
        new = build_info(
            self.features,
            self.fps,
            self.info["sim2pi"],
            self.info.get("robot_type"),
            self._rows,
            len(self._tasks),
        )
        _fill_video_info(self.root, new, self._rows)
        atomic_write_json(self.root / STATS_PATH, stats_to_json(aggregate_stats(self._stats)))
        atomic_write_json(self.root / INFO_PATH, new)
        self.info = new
        self.features = new["features"]

    def close(self) -> None:
        """Discard an unsaved episode (with a warning) and release the dataset."""
        with self._mutex:
            if self._closed:
                return
            if self.recording:
                logger.warning(
                    "closing %s with an unsaved episode of %d frames: discarded", self.root, self._n
                )
                self.discard_episode()
            self._closed = True
            self._lock.release()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _scalar(value: Any, key: str, dtype: type) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size != 1:
        raise SpecMismatch(key, "shape", "a scalar", arr.shape)
    if dtype is np.bool_ and arr.dtype.kind not in "biuf":
        raise SpecMismatch(key, "dtype", "bool", str(arr.dtype))
    if dtype is np.float32 and arr.dtype.kind not in "biuf":
        raise SpecMismatch(key, "dtype", "float32", str(arr.dtype))
    return arr.reshape(()).astype(dtype)


# ----------------------------------------------------------------------------------------------
# the reader


class Episode:
    """One episode as numpy arrays, keyed like the spec (``observation``, ``achieved_goal``,
    ``desired_goal``, ``image`` (T, H, W, 3) uint8, ``task`` (one-hot), ...) plus ``action``,
    ``action_applied`` (T, 2), ``reward`` (T,) float32, ``success``, ``done``, ``intervention``
    (T,) bool, ``timestamp`` (T,) float32 and ``frame_index`` (T,) int64. ``task_text`` is the task
    string. Arrays are also attributes (``ep.action``)."""

    def __init__(self, index: int, task_text: str, fps: int, arrays: dict[str, np.ndarray]) -> None:
        self.index = index
        self.task_text = task_text
        self.fps = fps
        self.arrays = arrays

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self.arrays[key]
        except KeyError:
            raise KeyError(
                f"episode {self.index} has no '{key}'; it has {sorted(self.arrays)}"
            ) from None

    def __contains__(self, key: object) -> bool:
        return key in self.arrays

    def __getattr__(self, key: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays", {})
        if key in arrays:
            return arrays[key]
        raise AttributeError(key)

    def keys(self) -> list[str]:
        return list(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays["frame_index"])

    @property
    def length(self) -> int:
        return len(self)

    def __repr__(self) -> str:
        return f"Episode({self.index}, {len(self)} frames, task={self.task_text!r})"


class Dataset:
    """Read-only numpy view of a dataset (no torch). See the module docstring for an example."""

    def __init__(
        self,
        root: Path,
        info: dict[str, Any],
        rows: list[dict[str, Any]],
        tasks: list[str],
        *,
        load_images: bool = True,
    ) -> None:
        self.root = root
        self.info = info
        self.rows = rows
        self.tasks = tasks
        self.load_images = load_images
        sim2pi = info.get("sim2pi") or {}
        if "spec" not in sim2pi:
            raise DatasetError(f"{INFO_PATH}: no sim2pi spec; this dataset was not made by sim2pi")
        self.spec = Spec.from_dict(sim2pi["spec"])
        self.robot_hash: str = sim2pi.get("robot_hash") or self.spec.robot_hash
        self.features: dict[str, dict[str, Any]] = info["features"]
        self.fps = int(info["fps"])
        self._columns = frame_columns(self.spec)
        self._file_start: dict[int, int] = {}
        for r in rows:
            s = chunk_file_to_slot(r["data/chunk_index"], r["data/file_index"])
            self._file_start[s] = min(
                self._file_start.get(s, r["dataset_from_index"]), r["dataset_from_index"]
            )
        self._cache: tuple[int, pa.Table] | None = None

    @classmethod
    def open(
        cls, path: str | Path, *, load_images: bool = True, recover_leftovers: bool = True
    ) -> Dataset:
        """Open a dataset. When no writer holds it (and ``recover_leftovers``), leftovers of an
        interrupted recording are cleaned first (see :func:`recover`); otherwise only committed
        episodes are read."""
        root = Path(path)
        if recover_leftovers and "sim2pi" in load_info(root):
            lock = DatasetLock(root)
            try:
                acquired = lock.acquire()
            except OSError:  # read-only file system: just read
                acquired = False
            if acquired:
                try:
                    recover(root, _lock_held=True)
                finally:
                    lock.release()
        info = load_info(root)
        rows, _ = resolve_rows(read_meta_files(root))
        for i, r in enumerate(rows):
            if int(r["episode_index"]) != i:
                raise DatasetError(
                    f"episode {i}: missing from {EPISODES_DIR}; run `sim2pi dataset repair`"
                )
        return cls(root, info, rows, read_tasks(root), load_images=load_images)

    @property
    def num_episodes(self) -> int:
        return len(self.rows)

    @property
    def num_frames(self) -> int:
        return int(sum(int(r["length"]) for r in self.rows))

    def __len__(self) -> int:
        return self.num_episodes

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """Aggregated stats (from the episode rows, so they always match the episodes)."""
        return aggregate_stats([row_stats(r) for r in self.rows]) if self.rows else {}

    def _table(self, slot: int) -> pa.Table:
        if self._cache is not None and self._cache[0] == slot:
            return self._cache[1]
        path = self.root / data_rel(slot)
        try:
            t = pq.read_table(path)
        except FileNotFoundError:
            raise DatasetError(f"{data_rel(slot)}: missing; run `sim2pi dataset repair`") from None
        except Exception as e:
            raise DatasetError(
                f"{data_rel(slot)}: cannot read ({type(e).__name__}: {e}); run "
                "`sim2pi dataset validate`"
            ) from None
        self._cache = (slot, t)
        return t

    def episode(self, i: int, *, load_images: bool | None = None) -> Episode:
        """Episode ``i`` as an :class:`Episode` (images decoded unless ``load_images=False``)."""
        if not 0 <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range (0..{self.num_episodes - 1})")
        load = self.load_images if load_images is None else load_images
        r = self.rows[i]
        n = int(r["length"])
        slot = chunk_file_to_slot(r["data/chunk_index"], r["data/file_index"])
        t = self._table(slot).slice(int(r["dataset_from_index"]) - self._file_start[slot], n)
        eps = t.column("episode_index").to_numpy()
        if len(eps) != n or not np.all(eps == i):
            raise DatasetError(
                f"episode {i}, {data_rel(slot)}: rows do not match the episode "
                "metadata; run `sim2pi dataset validate`"
            )
        arrays: dict[str, np.ndarray] = {}
        for key, col in self._columns.items():
            ft = self.features[col]
            if ft["dtype"] == "video":
                if load:
                    vs = chunk_file_to_slot(
                        r[f"videos/{col}/chunk_index"], r[f"videos/{col}/file_index"]
                    )
                    start = round(float(r[f"videos/{col}/from_timestamp"]) * self.fps)
                    arrays[key] = decode_frames(self.root / video_rel(col, vs), start, n, self.fps)
                continue
            arrays[key] = _arrow_to_np(t.column(col), ft)
        for key in ("timestamp", "frame_index"):
            arrays[key] = _arrow_to_np(t.column(key), self.features[key])
        tidx = int(t.column("task_index")[0].as_py())
        text = self.tasks[tidx] if 0 <= tidx < len(self.tasks) else (r["tasks"] or [""])[0]
        return Episode(i, text, self.fps, arrays)

    def episodes(self, *, load_images: bool | None = None) -> Iterator[Episode]:
        for i in range(self.num_episodes):
            yield self.episode(i, load_images=load_images)

    def __iter__(self) -> Iterator[Episode]:
        return self.episodes()

    def __repr__(self) -> str:
        return (
            f"Dataset({self.root}, task={self.spec.task!r}, {self.num_episodes} episodes, "
            f"{self.num_frames} frames at {self.fps} fps)"
        )


# ----------------------------------------------------------------------------------------------
# validation

# What a conforming dataset must have (also checked by the conformance test).
REQUIRED_INFO_KEYS: dict[str, type | tuple[type, ...]] = {
    "codebase_version": str,
    "robot_type": (str, type(None)),
    "total_episodes": int,
    "total_frames": int,
    "total_tasks": int,
    "chunks_size": int,
    "data_files_size_in_mb": int,
    "video_files_size_in_mb": int,
    "fps": int,
    "splits": dict,
    "data_path": str,
    "video_path": (str, type(None)),
    "features": dict,
}
REQUIRED_ROW_KEYS = (
    "episode_index",
    "tasks",
    "length",
    "data/chunk_index",
    "data/file_index",
    "dataset_from_index",
    "dataset_to_index",
    "meta/episodes/chunk_index",
    "meta/episodes/file_index",
)
VIDEO_ROW_KEYS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")


@dataclass
class Problem:
    """One thing wrong with a dataset: what, which episode (if known) and which file."""

    message: str
    episode: int | None = None
    file: str | None = None
    level: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = []
        if self.episode is not None:
            where.append(f"episode {self.episode}")
        if self.file:
            where.append(self.file)
        prefix = ", ".join(where)
        return f"{self.level}: {prefix + ': ' if prefix else ''}{self.message}"


def validate(path: str | Path, *, deep: bool = False) -> list[Problem]:
    """Check a dataset against the LeRobot v3.0 rules and sim2pi's own; returns the problems found
    (empty when the dataset is good). Each problem names the episode and the file. ``deep`` also
    decodes every video frame."""
    root = Path(path)
    probs: list[Problem] = []

    def err(msg: str, episode: int | None = None, file: str | None = None) -> None:
        probs.append(Problem(msg, episode, file))

    # info.json
    try:
        info = load_info(root)
    except DatasetError as exc:
        return [Problem(str(exc), None, INFO_PATH)]
    for key, typ in REQUIRED_INFO_KEYS.items():
        if key not in info:
            err(f"missing required key '{key}'", file=INFO_PATH)
        elif not isinstance(info[key], typ) or (typ is int and isinstance(info[key], bool)):
            err(f"'{key}' has type {type(info[key]).__name__}", file=INFO_PATH)
    if info.get("codebase_version") != CODEBASE_VERSION:
        err(
            f"codebase_version is {info.get('codebase_version')!r}, expected {CODEBASE_VERSION!r}",
            file=INFO_PATH,
        )
    if info.get("data_path") != DATA_PATH:
        err(f"data_path is {info.get('data_path')!r}, expected {DATA_PATH!r}", file=INFO_PATH)
    features = info["features"]
    vkeys = video_keys(features)
    if vkeys and info.get("video_path") != VIDEO_PATH:
        err(f"video_path is {info.get('video_path')!r}, expected {VIDEO_PATH!r}", file=INFO_PATH)
    if info.get("chunks_size") != CHUNKS_SIZE:
        err(
            f"chunks_size is {info.get('chunks_size')!r}, this writer uses {CHUNKS_SIZE}",
            file=INFO_PATH,
        )
    fps = info.get("fps")
    if not isinstance(fps, int) or fps <= 0:
        return [*probs, Problem(f"fps must be a positive integer, got {fps!r}", None, INFO_PATH)]
    for key, ft in features.items():
        if not isinstance(ft, dict) or not {"dtype", "shape", "names"} <= set(ft):
            err(f"feature '{key}' needs 'dtype', 'shape' and 'names'", file=INFO_PATH)
            continue
        if ft["dtype"] == "video" and ft["names"] != ["height", "width", "channels"]:
            err(
                f"video feature '{key}' must have names ['height', 'width', 'channels'], got "
                f"{ft['names']}",
                file=INFO_PATH,
            )
    for key, ft in DEFAULT_FEATURES.items():
        if key not in features or features[key].get("dtype") != ft["dtype"]:
            err(f"missing LeRobot feature '{key}' ({ft['dtype']})", file=INFO_PATH)
    if probs:
        return probs
    try:
        spec = Spec.from_dict(info["sim2pi"]["spec"])
        expected_features = build_features(spec)
        for key, ft in expected_features.items():
            got = features.get(key)
            if got is None:
                err(f"feature '{key}' of the sim2pi spec is missing", file=INFO_PATH)
            elif any(got.get(k) != ft[k] for k in ("dtype", "shape", "names")):
                err(f"feature '{key}' disagrees with the sim2pi spec", file=INFO_PATH)
        if list(features) != list(expected_features):
            err(f"features are not in the expected order {list(expected_features)}", file=INFO_PATH)
    except (KeyError, TypeError, ValueError) as exc:
        err(f"no usable sim2pi spec ({type(exc).__name__}: {exc})", file=INFO_PATH)
    schema = data_schema(features)

    # tasks
    try:
        tasks = read_tasks(root)
    except DatasetError as exc:
        err(str(exc), file=TASKS_PATH)
        tasks = []
    if info.get("total_tasks") != len(tasks):
        err(
            f"total_tasks is {info.get('total_tasks')}, {TASKS_PATH} has {len(tasks)}",
            file=INFO_PATH,
        )
    if len(set(tasks)) != len(tasks):
        err("task strings are not unique", file=TASKS_PATH)

    # leftovers and layout
    for p in _tmp_files(root):
        probs.append(
            Problem(
                "leftover of an interrupted write (removed on the next open)",
                None,
                _rel(root, p),
                "warning",
            )
        )
    layout_dirs = [(root / DATA_DIR, ".parquet"), (root / EPISODES_DIR, ".parquet")]
    layout_dirs += [(root / VIDEO_DIR / vk, ".mp4") for vk in vkeys]
    for folder, suffix in layout_dirs:
        if not folder.exists():
            continue
        for entry in sorted(folder.iterdir()):
            if not (entry.is_dir() and _CHUNK_RE.match(entry.name)):
                err("unexpected entry (only chunk-XXX folders belong here)", file=_rel(root, entry))
                continue
            files = sorted(entry.iterdir())
            finals = [f for f in files if not f.name.endswith(TMP_SUFFIX)]
            if len(finals) > CHUNKS_SIZE:
                err(
                    f"{len(finals)} files in one chunk; at most {CHUNKS_SIZE}",
                    file=_rel(root, entry),
                )
            for f in finals:
                m = _FILE_RE.match(f.name)
                if f.is_dir() or not m or not f.name.endswith(suffix):
                    err(
                        f"unexpected entry (only file-XXX{suffix} belongs here; LeRobot's glob "
                        "would read or skip it)",
                        file=_rel(root, f),
                    )
    if root.joinpath(VIDEO_DIR).exists():
        for d in sorted(root.joinpath(VIDEO_DIR).iterdir()):
            if d.name not in vkeys:
                err("video folder of no video feature", file=_rel(root, d))

    # episode metadata
    metas: list[MetaFile] = []
    for slot, p in _slot_files(root / EPISODES_DIR, ".parquet"):
        try:
            metas.append(MetaFile(slot, p, pq.read_table(p).to_pylist()))
        except Exception as exc:
            err(
                f"cannot read the episode metadata ({type(exc).__name__}: {exc})",
                file=_rel(root, p),
            )
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    need = list(REQUIRED_ROW_KEYS) + [f"videos/{vk}/{k}" for vk in vkeys for k in VIDEO_ROW_KEYS]
    for meta in metas:
        rel = _rel(root, meta.path)
        for r in meta.rows:
            pos = len(rows)
            missing = [k for k in need if k not in r or r[k] is None]
            if missing:
                err(f"row {pos} lacks {missing}", episode=r.get("episode_index"), file=rel)
                continue
            e = int(r["episode_index"])
            if e in seen:
                err("episode listed twice in the episode metadata", episode=e, file=rel)
            seen.add(e)
            if e != pos:
                err(
                    f"row {pos} holds episode {e}; LeRobot looks episodes up by position",
                    episode=e,
                    file=rel,
                )
            if (
                chunk_file_to_slot(r["meta/episodes/chunk_index"], r["meta/episodes/file_index"])
                != meta.slot
            ):
                err(
                    "meta/episodes/chunk_index, file_index do not name the file it is in",
                    episode=e,
                    file=rel,
                )
            if r["tasks"] is None or any(t not in tasks for t in r["tasks"]):
                err(f"tasks {r['tasks']} are not all in {TASKS_PATH}", episode=e, file=rel)
            stats_present = {k.split("/")[1] for k in r if k.startswith("stats/")}
            for key in features:
                if key not in stats_present:
                    err(f"no stats/{key}/... columns", episode=e, file=rel)
            rows.append(r)
    n_eps = len(rows)
    if info["total_episodes"] != n_eps:
        err(
            f"total_episodes is {info['total_episodes']}, the episode metadata has {n_eps} episodes",
            file=INFO_PATH,
        )
    total = 0
    for r in rows:
        e = int(r["episode_index"])
        if (
            r["dataset_from_index"] != total
            or r["dataset_to_index"] - r["dataset_from_index"] != r["length"]
        ):
            err(
                f"dataset_from_index/to_index {r['dataset_from_index']}..{r['dataset_to_index']} do not "
                f"follow the previous episodes (expected from {total}, length {r['length']})",
                episode=e,
                file=episodes_rel(
                    chunk_file_to_slot(
                        r["meta/episodes/chunk_index"], r["meta/episodes/file_index"]
                    )
                ),
            )
        total += int(r["length"])
    if info["total_frames"] != total:
        err(
            f"total_frames is {info['total_frames']}, the episodes have {total} frames",
            file=INFO_PATH,
        )

    # data files
    by_data: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_data.setdefault(
            chunk_file_to_slot(r["data/chunk_index"], r["data/file_index"]), []
        ).append(r)
    on_disk = dict(_slot_files(root / DATA_DIR, ".parquet"))
    prev_last = -1
    for slot in sorted(on_disk):
        rel = data_rel(slot)
        if slot not in by_data:
            err("data file of no episode (LeRobot would read its rows)", file=rel)
            continue
        eps_here = by_data[slot]
        try:
            t = pq.read_table(on_disk[slot])
        except Exception as exc:
            for r in eps_here:
                err(
                    f"cannot read the data file ({type(exc).__name__}: {exc})",
                    episode=int(r["episode_index"]),
                    file=rel,
                )
            continue
        if t.column_names != schema.names:
            err(
                f"columns {t.column_names} differ from the non-video features in info.json order "
                f"{schema.names}",
                episode=int(eps_here[0]["episode_index"]),
                file=rel,
            )
            continue
        for f in schema:
            if not t.schema.field(f.name).type.equals(f.type):
                err(
                    f"column '{f.name}' has type {t.schema.field(f.name).type}, expected {f.type}",
                    episode=int(eps_here[0]["episode_index"]),
                    file=rel,
                )
        idx = t.column("index").to_numpy()
        if len(idx) and idx[0] != prev_last + 1:
            err(
                f"first index {idx[0]} does not follow the previous data file ({prev_last}); "
                "LeRobot reads data files in sorted order",
                episode=int(eps_here[0]["episode_index"]),
                file=rel,
            )
        if len(idx):
            prev_last = int(idx[-1])
        ep_col = t.column("episode_index").to_numpy()
        offset = 0
        for r in sorted(eps_here, key=lambda r: r["dataset_from_index"]):
            e, n = int(r["episode_index"]), int(r["length"])
            sl = slice(offset, offset + n)
            offset += n
            if not np.all(ep_col[sl] == e) or len(ep_col[sl]) != n:
                err(f"expected {n} rows of episode {e} at row {sl.start}", episode=e, file=rel)
                continue
            fi = t.column("frame_index").to_numpy()[sl]
            if not np.array_equal(fi, np.arange(n)):
                err("frame_index is not 0, 1, ..., length-1", episode=e, file=rel)
            ts = t.column("timestamp").to_numpy()[sl].astype(np.float64)
            if not np.allclose(ts, np.arange(n) / fps, atol=1e-4, rtol=0):
                err(f"timestamp is not frame_index / fps ({fps})", episode=e, file=rel)
            gi = t.column("index").to_numpy()[sl]
            if not np.array_equal(gi, np.arange(r["dataset_from_index"], r["dataset_to_index"])):
                err(
                    "index does not run from dataset_from_index to dataset_to_index",
                    episode=e,
                    file=rel,
                )
            ti = t.column("task_index").to_numpy()[sl]
            if (
                np.any(ti < 0)
                or np.any(ti >= max(len(tasks), 1))
                or (tasks and any(tasks[int(x)] not in (r["tasks"] or []) for x in np.unique(ti)))
            ):
                err(
                    "task_index does not name the episode's task in tasks.parquet",
                    episode=e,
                    file=rel,
                )
        if offset != t.num_rows:
            err(f"holds {t.num_rows} rows, its episodes {offset}", file=rel)
    for slot, eps_here in by_data.items():
        if slot not in on_disk:
            for r in eps_here:
                err("data file is missing", episode=int(r["episode_index"]), file=data_rel(slot))

    # videos
    for vk in vkeys:
        shape = features[vk]["shape"]
        by_video: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            by_video.setdefault(
                chunk_file_to_slot(r[f"videos/{vk}/chunk_index"], r[f"videos/{vk}/file_index"]), []
            ).append(r)
        vdisk = dict(_slot_files(root / VIDEO_DIR / vk, ".mp4"))
        for slot in sorted(set(vdisk) - set(by_video)):
            err("video file of no episode", file=video_rel(vk, slot))
        for slot, eps_here in sorted(by_video.items()):
            rel = video_rel(vk, slot)
            first = int(eps_here[0]["episode_index"])
            if slot not in vdisk:
                for r in eps_here:
                    err("video file is missing", episode=int(r["episode_index"]), file=rel)
                continue
            try:
                probe = probe_video(vdisk[slot], fps)
            except DatasetError as exc:
                for r in eps_here:
                    err(
                        f"unreadable video ({str(exc).split(': ', 1)[-1]})",
                        episode=int(r["episode_index"]),
                        file=rel,
                    )
                continue
            offset = 0
            for r in sorted(eps_here, key=lambda r: r[f"videos/{vk}/from_timestamp"]):
                e, n = int(r["episode_index"]), int(r["length"])
                f0, f1 = r[f"videos/{vk}/from_timestamp"], r[f"videos/{vk}/to_timestamp"]
                if abs(f0 - offset / fps) > 1e-4 or abs(f1 - (offset + n) / fps) > 1e-4:
                    err(
                        f"from/to_timestamp {f0:.4f}..{f1:.4f} expected {offset / fps:.4f}.."
                        f"{(offset + n) / fps:.4f}",
                        episode=e,
                        file=rel,
                    )
                if deep and offset + n <= probe.frames:
                    try:
                        decode_frames(vdisk[slot], offset, n, fps)
                    except DatasetError as ex:
                        err(
                            f"frames do not decode ({str(ex).split(': ', 1)[-1]})",
                            episode=e,
                            file=rel,
                        )
                offset += n
            if probe.frames != offset:
                err(
                    f"has {probe.frames} frames, its episodes have {offset} (truncated or "
                    "overwritten video?)",
                    episode=first,
                    file=rel,
                )
            if not probe.pts_ok:
                err(f"frame k is not at time k/{fps}", episode=first, file=rel)
            if [probe.height, probe.width] != list(shape[:2]):
                err(
                    f"is {probe.width}x{probe.height}, the feature says {shape[1]}x{shape[0]}",
                    episode=first,
                    file=rel,
                )
            if probe.pix_fmt != "yuv420p":
                err(f"pixel format {probe.pix_fmt}, expected yuv420p", episode=first, file=rel)

    # stats
    if rows:
        try:
            st = stats_from_json(json.loads((root / STATS_PATH).read_text()))
        except FileNotFoundError:
            err("missing", file=STATS_PATH)
        except Exception as exc:
            err(f"cannot read ({type(exc).__name__}: {exc})", file=STATS_PATH)
        else:
            try:
                expected = aggregate_stats([row_stats(r) for r in rows])
                for key, agg in expected.items():
                    for stat in ("min", "max", "mean", "std", "count"):
                        got = st.get(key, {}).get(stat)
                        if (
                            got is None
                            or np.shape(got) != np.shape(agg[stat])
                            or not np.allclose(
                                np.asarray(got, np.float64),
                                agg[stat],
                                rtol=1e-6,
                                atol=1e-9,
                                equal_nan=True,
                            )
                        ):
                            err(
                                f"stats for '{key}' ({stat}) disagree with the episodes",
                                file=STATS_PATH,
                            )
                            break
            except Exception as exc:  # malformed per-episode stats: reported above per row
                err(
                    f"cannot aggregate the episodes' stats ({type(exc).__name__}: {exc})",
                    file=STATS_PATH,
                )
    return probs


# ----------------------------------------------------------------------------------------------
# repair: rebuild all metadata from the data and video files


@dataclass
class RepairReport:
    episodes: int = 0
    quarantined: list[str] = field(default_factory=list)
    renumbered: dict[int, int] = field(default_factory=dict)  # old episode index -> new
    rewritten_data: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = f"{self.episodes} episode(s) kept"
        if self.quarantined:
            s += f"; moved {len(self.quarantined)} bad file(s) to {QUARANTINE_DIR}/"
        if self.renumbered:
            s += f"; renumbered {len(self.renumbered)} episode(s)"
        return s


def _load_template(root: Path) -> tuple[dict[str, Any], int, dict[str, Any], str | None]:
    """(features, fps, sim2pi block, robot_type) from info.json, else from meta/sim2pi.json."""
    for rel in (INFO_PATH, SIM2PI_PATH):
        try:
            d = json.loads((root / rel).read_text())
            spec = Spec.from_dict(d["sim2pi"]["spec"])
            return build_features(spec), int(d["fps"]), d["sim2pi"], d.get("robot_type")
        except Exception:  # try the next source
            continue
    raise DatasetError(
        f"{root}: neither {INFO_PATH} nor {SIM2PI_PATH} holds a usable spec; "
        "cannot rebuild the metadata"
    )


@dataclass
class _Group:
    slot: int
    table: pa.Table
    runs: list[tuple[int, int, int]]  # (old episode index, first row, length)
    image_stats: dict[str, list[dict[str, np.ndarray] | None]] = field(default_factory=dict)


def _split_runs(t: pa.Table, fps: int) -> list[tuple[int, int, int]]:
    eps = t.column("episode_index").to_numpy()
    if len(eps) == 0:
        raise DatasetError("no rows")
    cut = np.flatnonzero(np.diff(eps) != 0) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(eps)]])
    fi = t.column("frame_index").to_numpy()
    ts = t.column("timestamp").to_numpy().astype(np.float64)
    runs = []
    for a, b in zip(starts, ends, strict=True):
        n = int(b - a)
        if not np.array_equal(fi[a:b], np.arange(n)):
            raise DatasetError(f"episode {int(eps[a])}: frame_index is not 0..{n - 1}")
        if not np.allclose(ts[a:b], np.arange(n) / fps, atol=1e-4, rtol=0):
            raise DatasetError(f"episode {int(eps[a])}: timestamp is not frame_index / fps")
        runs.append((int(eps[a]), int(a), n))
    if len({r[0] for r in runs}) != len(runs):
        raise DatasetError("an episode's rows are split within the file")
    return runs


def repair(path: str | Path) -> RepairReport:
    """Rebuild all metadata (episode rows, tasks, stats, info) from the data and video files.

    Files that are unreadable or inconsistent (truncated parquet or mp4, frame counts that disagree)
    are moved to ``DIR/quarantine/<time>/`` with the other files of their episodes, and later
    episodes are renumbered so indices have no gaps (their data files get new ``episode_index`` /
    ``index`` values; their contents and videos are untouched). Intact episodes whose index does not
    change are not rewritten."""
    root = Path(path)
    report = RepairReport()
    with _locked(root, "repair"):
        for p in _tmp_files(root):
            p.unlink(missing_ok=True)
            report.removed.append(_rel(root, p))
        features, fps, sim2pi, robot_type = _load_template(root)
        vkeys = video_keys(features)
        schema = data_schema(features)
        qdir = root / QUARANTINE_DIR / time.strftime("%Y%m%d-%H%M%S")

        def quarantine(p: Path) -> None:
            if p.exists():
                dest = qdir / _rel(root, p)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(p), str(dest))
                report.quarantined.append(_rel(root, p))

        old_best: dict[int, tuple[int, dict[str, Any]]] = {}
        for slot, p in _slot_files(root / EPISODES_DIR, ".parquet"):
            try:
                for r in pq.read_table(p).to_pylist():
                    e = int(r["episode_index"])
                    if e not in old_best or slot > old_best[e][0]:
                        old_best[e] = (slot, r)
            except Exception as exc:
                logger.warning("repair: %s is unreadable (%s); rebuilding it", _rel(root, p), exc)
        try:
            old_tasks: list[str] | None = read_tasks(root)
        except DatasetError:
            old_tasks = None

        groups: list[_Group] = []
        data_slots = dict(_slot_files(root / DATA_DIR, ".parquet"))
        for slot, p in sorted(data_slots.items()):
            problem = None
            try:
                t = pq.read_table(p)
                if t.column_names != schema.names:
                    raise DatasetError(f"columns {t.column_names} != {schema.names}")
                t = t.cast(schema)
                runs = _split_runs(t, fps)
                for vk in vkeys:
                    vp = root / video_rel(vk, slot)
                    if not vp.exists():
                        raise DatasetError(f"{video_rel(vk, slot)} is missing")
                    pr = probe_video(vp, fps)
                    if pr.frames != t.num_rows or not pr.pts_ok:
                        raise DatasetError(
                            f"{video_rel(vk, slot)} has {pr.frames} frames, data {t.num_rows}"
                        )
                groups.append(_Group(slot, t, runs))
            except Exception as exc:  # any unreadable or inconsistent file set is quarantined
                problem = exc
            if problem is not None:
                logger.warning("repair: quarantining slot %d (%s)", slot, problem)
                quarantine(p)
                for vk in vkeys:
                    quarantine(root / video_rel(vk, slot))
        kept_slots = {g.slot for g in groups}
        for vk in vkeys:
            for slot, vp in _slot_files(root / VIDEO_DIR / vk, ".mp4"):
                if slot not in kept_slots:
                    quarantine(vp)
        # an episode in several file sets (interrupted compaction): prefer the committed one
        claims: dict[int, list[int]] = {}
        for g in groups:
            for e, _, _ in g.runs:
                claims.setdefault(e, []).append(g.slot)
        preferred = {}
        for e, slots in claims.items():
            committed = old_best.get(e, (None, None))[1]
            cslot = (
                chunk_file_to_slot(committed["data/chunk_index"], committed["data/file_index"])
                if committed
                else None
            )
            preferred[e] = cslot if cslot in slots else max(slots)
        final_groups = []
        for g in groups:
            if all(preferred[e] == g.slot for e, _, _ in g.runs):
                final_groups.append(g)
            else:
                quarantine(root / data_rel(g.slot))
                for vk in vkeys:
                    quarantine(root / video_rel(vk, g.slot))
        final_groups.sort(key=lambda g: g.runs[0][0])

        # tasks
        seen_ti = sorted(
            {
                int(x)
                for g in final_groups
                for x in np.unique(g.table.column("task_index").to_numpy())
            }
        )
        if old_tasks is not None and all(0 <= i < len(old_tasks) for i in seen_ti):
            tasks = old_tasks
        else:
            names: dict[int, str] = {}
            for g in final_groups:
                ti = g.table.column("task_index").to_numpy()
                for e, a, _ in g.runs:
                    r = old_best.get(e, (None, None))[1]
                    if r and r.get("tasks"):
                        names.setdefault(int(ti[a]), r["tasks"][0])
            tasks = [names.get(i, f"task {i}") for i in range(max(seen_ti, default=-1) + 1)]
            if len(set(tasks)) != len(tasks):
                tasks = [f"{t} ({i})" for i, t in enumerate(tasks)]

        # renumber, rewrite data files whose indices change
        all_slots = [s for s in data_slots] + [
            s for s, _ in _slot_files(root / EPISODES_DIR, ".parquet")
        ]
        meta_slot = max(all_slots, default=-1) + 1
        mc, mf = slot_to_chunk_file(meta_slot)
        rows = []
        new_ep, start = 0, 0
        for g in final_groups:
            ep_col = g.table.column("episode_index").to_numpy().copy()
            idx_col = g.table.column("index").to_numpy().copy()
            ti_col = g.table.column("task_index").to_numpy()
            chunk, file = slot_to_chunk_file(g.slot)
            offset = 0
            for old_e, a, n in g.runs:
                if old_e != new_ep:
                    report.renumbered[old_e] = new_ep
                ep_col[a : a + n] = new_ep
                idx_col[a : a + n] = np.arange(start, start + n)
                sl = g.table.slice(a, n)
                task = tasks[int(ti_col[a])]
                row: dict[str, Any] = {
                    "episode_index": new_ep,
                    "tasks": [task],
                    "length": n,
                    "data/chunk_index": chunk,
                    "data/file_index": file,
                    "dataset_from_index": start,
                    "dataset_to_index": start + n,
                }
                stats: dict[str, dict[str, np.ndarray]] = {}
                for vk in vkeys:
                    row.update(
                        {
                            f"videos/{vk}/chunk_index": chunk,
                            f"videos/{vk}/file_index": file,
                            f"videos/{vk}/from_timestamp": offset / fps,
                            f"videos/{vk}/to_timestamp": (offset + n) / fps,
                        }
                    )
                    old = old_best.get(old_e, (None, None))[1]
                    reuse = (
                        old is not None
                        and int(old["length"]) == n
                        and chunk_file_to_slot(
                            old.get(f"videos/{vk}/chunk_index", -1),
                            old.get(f"videos/{vk}/file_index", -1),
                        )
                        == g.slot
                    )
                    if reuse and old is not None:
                        stats[vk] = row_stats(old).get(vk, {})
                    if not stats.get(vk):
                        acc = ImageStats()
                        for img in decode_frames(root / video_rel(vk, g.slot), offset, n, fps):
                            acc.add(img)
                        stats[vk] = acc.result()
                row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = mc, mf
                for key, ft in features.items():
                    if ft["dtype"] != "video":
                        col = (
                            ep_col[a : a + n]
                            if key == "episode_index"
                            else (
                                idx_col[a : a + n]
                                if key == "index"
                                else _arrow_to_np(sl.column(key), ft)
                            )
                        )
                        stats[key] = numeric_stats(col)
                row.update(_flatten_stats({k: stats[k] for k in features}))
                rows.append(row)
                offset += n
                start += n
                new_ep += 1
            if not (
                np.array_equal(ep_col, g.table.column("episode_index").to_numpy())
                and np.array_equal(idx_col, g.table.column("index").to_numpy())
            ):
                t2 = g.table.set_column(
                    g.table.column_names.index("episode_index"),
                    "episode_index",
                    pa.array(ep_col, pa.int64()),
                )
                t2 = t2.set_column(
                    t2.column_names.index("index"), "index", pa.array(idx_col, pa.int64())
                )
                write_parquet_atomic(t2.cast(schema), root / data_rel(g.slot))
                report.rewritten_data.append(data_rel(g.slot))
        old_meta = [p for _, p in _slot_files(root / EPISODES_DIR, ".parquet")]
        if rows:
            write_parquet_atomic(
                pa.Table.from_pylist(rows, schema=episodes_schema(features)),
                root / episodes_rel(meta_slot),
            )
        for p in old_meta:
            if p != root / episodes_rel(meta_slot):
                p.unlink(missing_ok=True)
        if tasks != old_tasks:
            write_tasks(root, tasks)
        info = build_info(features, fps, sim2pi, robot_type, [], 0)
        _write_derived(root, info, rows, len(tasks))
        if not (root / SIM2PI_PATH).exists():
            atomic_write_json(
                root / SIM2PI_PATH,
                {"features": features, "fps": fps, "robot_type": robot_type, "sim2pi": sim2pi},
            )
        report.episodes = len(rows)
    logger.info("repaired %s: %s", root, report.summary())
    return report


# ----------------------------------------------------------------------------------------------
# compaction: merge one-file-per-episode into few large files


@dataclass
class CompactReport:
    episodes: int = 0
    data_files_before: int = 0
    data_files_after: int = 0
    meta_files_before: int = 0
    meta_files_after: int = 0
    seconds: float = 0.0


def compact(
    path: str | Path,
    *,
    max_data_mb: float = DATA_FILES_SIZE_IN_MB,
    max_video_mb: float = VIDEO_FILES_SIZE_IN_MB,
) -> CompactReport:
    """Merge the episodes' data, video and episode-metadata files into few large files.

    Crash-safe: the merged files are written under new slots (above every slot in use) and become
    visible in one step, when the single new episode-metadata file is renamed into place; the old
    files are deleted afterwards. An interruption before that rename leaves uncommitted files that
    :func:`recover` deletes; after it, old files that :func:`recover` deletes."""
    root = Path(path)
    t0 = time.perf_counter()
    report = CompactReport()
    with _locked(root, "compaction"):
        recover(root, _lock_held=True)
        info = load_info(root)
        features = info["features"]
        fps = int(info["fps"])
        vkeys = video_keys(features)
        metas = read_meta_files(root)
        rows, _ = resolve_rows(metas)
        report.episodes = len(rows)
        src: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            src.setdefault(
                chunk_file_to_slot(r["data/chunk_index"], r["data/file_index"]), []
            ).append(r)
        report.data_files_before = len(src)
        report.meta_files_before = len(metas)
        if not rows:
            return report
        # pack whole source file sets into groups under the size limits
        packed: list[list[int]] = []
        cur: list[int] = []
        cur_data = 0.0
        cur_video = dict.fromkeys(vkeys, 0.0)
        cur_extra: dict[str, bytes] = {}
        for slot in sorted(src):
            dsize = (root / data_rel(slot)).stat().st_size / 2**20
            vsize = {vk: (root / video_rel(vk, slot)).stat().st_size / 2**20 for vk in vkeys}
            extra = {vk: probe_video(root / video_rel(vk, slot), fps).extradata for vk in vkeys}
            fits = (
                cur
                and cur_data + dsize <= max_data_mb
                and all(
                    cur_video[vk] + vsize[vk] <= max_video_mb and cur_extra[vk] == extra[vk]
                    for vk in vkeys
                )
            )
            if cur and not fits:
                packed.append(cur)
                cur, cur_data, cur_video = [], 0.0, dict.fromkeys(vkeys, 0.0)
            if not cur:
                cur_extra = extra
            cur.append(slot)
            cur_data += dsize
            for vk in vkeys:
                cur_video[vk] += vsize[vk]
        packed.append(cur)
        if len(packed) == len(src) and len(metas) == 1:
            report.data_files_after, report.meta_files_after = len(src), 1
            report.seconds = time.perf_counter() - t0
            return report
        base = max(s for r in rows for s in _row_slots(r, vkeys)) + 1
        meta_slot = base + len(packed)
        mc, mf = slot_to_chunk_file(meta_slot)
        schema = data_schema(features)
        new_rows: list[dict[str, Any]] = []
        for j, group in enumerate(packed):
            slot = base + j
            chunk, file = slot_to_chunk_file(slot)
            table = pa.concat_tables(
                [pq.read_table(root / data_rel(s)).cast(schema) for s in group]
            )
            write_parquet_atomic(table, root / data_rel(slot))
            lengths = [sum(int(r["length"]) for r in src[s]) for s in group]
            for vk in vkeys:
                final = root / video_rel(vk, slot)
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = tmp_path(final)
                concat_videos([root / video_rel(vk, s) for s in group], lengths, tmp, fps)
                os.replace(tmp, final)
                fsync_dir(final.parent)
            offset = 0
            for s in group:
                for r in sorted(src[s], key=lambda r: r["dataset_from_index"]):
                    n = int(r["length"])
                    nr = dict(r)
                    nr["data/chunk_index"], nr["data/file_index"] = chunk, file
                    for vk in vkeys:
                        nr[f"videos/{vk}/chunk_index"], nr[f"videos/{vk}/file_index"] = chunk, file
                        nr[f"videos/{vk}/from_timestamp"] = offset / fps
                        nr[f"videos/{vk}/to_timestamp"] = (offset + n) / fps
                    nr["meta/episodes/chunk_index"], nr["meta/episodes/file_index"] = mc, mf
                    new_rows.append(nr)
                    offset += n
        write_parquet_atomic(
            pa.Table.from_pylist(new_rows, schema=episodes_schema(features)),
            root / episodes_rel(meta_slot),
        )  # the commit point
        for r in rows:
            for _, p in _row_files(root, r, vkeys):
                p.unlink(missing_ok=True)
        for m in metas:
            m.path.unlink(missing_ok=True)
        for folder in [
            root / DATA_DIR,
            root / EPISODES_DIR,
            *[root / VIDEO_DIR / vk for vk in vkeys],
        ]:
            for d in folder.iterdir():
                if d.is_dir() and _CHUNK_RE.match(d.name) and not any(d.iterdir()):
                    d.rmdir()
        fsync_dir(root / DATA_DIR)
        report.data_files_after = len(packed)
        report.meta_files_after = 1
    report.seconds = time.perf_counter() - t0
    logger.info(
        "compacted %s: %d -> %d data files in %.2f s",
        root,
        report.data_files_before,
        report.data_files_after,
        report.seconds,
    )
    return report


def info_summary(path: str | Path) -> dict[str, Any]:
    """A short description of a dataset for ``sim2pi dataset info``."""
    root = Path(path)
    info = load_info(root)
    rows, _ = resolve_rows(read_meta_files(root))
    lengths = [int(r["length"]) for r in rows]
    sim2pi = info.get("sim2pi", {})
    spec = sim2pi.get("spec", {})
    return {
        "path": str(root),
        "task": spec.get("task"),
        "robot": info.get("robot_type"),
        "robot_hash": sim2pi.get("robot_hash"),
        "fps": info.get("fps"),
        "episodes": len(rows),
        "frames": int(sum(lengths)),
        "mean_length": float(np.mean(lengths)) if lengths else 0.0,
        "tasks": read_tasks(root),
        "data_files": len(_slot_files(root / DATA_DIR, ".parquet")),
        "episode_files": len(_slot_files(root / EPISODES_DIR, ".parquet")),
        "features": {k: f"{v['dtype']} {tuple(v['shape'])}" for k, v in info["features"].items()},
        "encoder": sim2pi.get("encoder"),
    }
