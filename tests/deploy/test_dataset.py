"""The LeRobot v3.0 dataset: round trip, stats, conformance, bad input, repair, compaction."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_dataset_helpers import TASKS, make_spec, psnr, record, synthetic_episode

from deploy.dataset import (
    Dataset,
    DatasetWriter,
    compact,
    numeric_stats,
    recover,
    repair,
    validate,
)
from hardware.errors import DatasetError, SpecMismatch

FPS = 20
LENGTHS = [12, 7, 15]


def errors(path: Path, deep: bool = False) -> list[str]:
    return [str(p) for p in validate(path, deep=deep) if p.level == "error"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    path = tmp_path_factory.mktemp("ds") / "demo"
    frames = record(path, make_spec(), LENGTHS, FPS)
    return path, frames


def copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------ round trip


def test_round_trip_arrays_frames_and_task(recorded: tuple[Path, list]) -> None:
    path, frames = recorded
    assert errors(path, deep=True) == []
    ds = Dataset.open(path)
    assert ds.num_episodes == len(LENGTHS)
    assert ds.num_frames == sum(LENGTHS)
    assert ds.fps == FPS
    assert ds.spec == make_spec()
    for i, ep in enumerate(ds.episodes()):
        src = frames[i]
        assert len(ep) == LENGTHS[i]
        assert ep.task_text == TASKS[i % 2]
        for key in ("observation", "achieved_goal", "desired_goal", "action", "action_applied"):
            np.testing.assert_array_equal(ep[key], np.stack([f[key] for f in src]), err_msg=key)
        np.testing.assert_array_equal(ep["reward"], [f["reward"] for f in src])
        np.testing.assert_array_equal(ep.success, [f["success"] for f in src])
        np.testing.assert_array_equal(ep.done, [f["done"] for f in src])
        np.testing.assert_array_equal(ep.intervention, [f["intervention"] for f in src])
        np.testing.assert_allclose(ep.timestamp, np.arange(LENGTHS[i]) / FPS, atol=1e-6)
        img = ep["image"]
        assert img.shape == (LENGTHS[i], 64, 64, 3) and img.dtype == np.uint8
        for k, f in enumerate(src):
            assert psnr(img[k], f["image"]) >= 30.0, (i, k)


def test_load_images_false_skips_video(recorded: tuple[Path, list]) -> None:
    ds = Dataset.open(recorded[0], load_images=False)
    ep = ds.episode(1)
    assert "image" not in ep and "observation" in ep
    assert "image" in ds.episode(1, load_images=True)


def test_stats_match_direct_numpy(recorded: tuple[Path, list]) -> None:
    path, frames = recorded
    stats = json.loads((path / "meta/stats.json").read_text())
    allf = [f for ep in frames for f in ep]
    obs = np.stack([f["observation"] for f in allf]).astype(np.float64)
    np.testing.assert_allclose(
        stats["observation.state"]["mean"], obs.mean(0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(stats["observation.state"]["std"], obs.std(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["min"], obs.min(0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["max"], obs.max(0), rtol=1e-6)
    assert stats["observation.state"]["count"] == [len(allf)]
    act = np.stack([f["action"] for f in allf]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["mean"], act.mean(0), rtol=1e-5, atol=1e-6)
    rew = np.array([f["reward"] for f in allf])
    np.testing.assert_allclose(stats["next.reward"]["mean"], [rew.mean()], rtol=1e-6)
    imgs = np.stack([f["image"] for f in allf]).astype(np.float64) / 255.0
    img_stats = stats["observation.images.front"]
    assert np.shape(img_stats["mean"]) == (3, 1, 1)
    np.testing.assert_allclose(np.ravel(img_stats["mean"]), imgs.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(np.ravel(img_stats["std"]), imgs.std(axis=(0, 1, 2)), rtol=1e-5)
    # per-episode stats in the episode rows
    rows = Dataset.open(path).rows
    ep1 = np.stack([f["observation"] for f in frames[1]])
    np.testing.assert_allclose(
        rows[1]["stats/observation.state/mean"], ep1.mean(0), rtol=1e-5, atol=1e-6
    )
    q = numeric_stats(ep1)["q50"]
    np.testing.assert_allclose(rows[1]["stats/observation.state/q50"], q, rtol=1e-6)


def test_resume_appends_and_discard_leaves_nothing(tmp_path: Path) -> None:
    spec = make_spec(with_image=False)
    record(tmp_path / "d", spec, [5, 6], FPS)
    with DatasetWriter.open(tmp_path / "d") as w:
        w.start_episode("reach the goal")
        for f in synthetic_episode(2, 4, spec):
            w.add_frame(f)
        w.discard_episode()
        assert w.num_episodes == 2
    record(tmp_path / "d", spec, [3], FPS, resume=True)
    ds = Dataset.open(tmp_path / "d")
    assert [len(e) for e in ds.episodes()] == [5, 6, 3]
    assert ds.rows[2]["dataset_from_index"] == 11
    assert errors(tmp_path / "d") == []


def test_writer_refuses_bad_frames_naming_the_feature(tmp_path: Path) -> None:
    spec = make_spec()
    w = DatasetWriter.create(tmp_path / "d", spec, FPS)
    with w:
        w.start_episode("x")
        good = synthetic_episode(0, 1, spec)[0]
        with pytest.raises(SpecMismatch, match="observation"):
            w.add_frame({**good, "observation": np.zeros(5, np.float32)})
        with pytest.raises(SpecMismatch, match="image"):
            w.add_frame({**good, "image": np.zeros((64, 64, 3), np.float32)})
        with pytest.raises(SpecMismatch, match="desired_goal"):
            w.add_frame({k: v for k, v in good.items() if k != "desired_goal"})
        with pytest.raises(SpecMismatch, match="bogus"):
            w.add_frame({**good, "bogus": 1})
        with pytest.raises(DatasetError, match="no frames"):
            w.save_episode()
    with pytest.raises(DatasetError, match="not empty"):
        DatasetWriter.create(tmp_path / "d", spec, FPS)
    with pytest.raises(DatasetError, match="integer"):
        DatasetWriter.create(tmp_path / "e", spec, 20.5)


def test_second_writer_is_refused(tmp_path: Path) -> None:
    spec = make_spec(with_image=False)
    with (
        DatasetWriter.create(tmp_path / "d", spec, FPS),
        pytest.raises(DatasetError, match="another process"),
    ):
        DatasetWriter.open(tmp_path / "d")


# ------------------------------------------------------------------------------ conformance

# LeRobot v3.0 facts this layout must follow (written out here on purpose, not imported).
INFO_KEYS = {
    "codebase_version",
    "robot_type",
    "total_episodes",
    "total_frames",
    "total_tasks",
    "chunks_size",
    "data_files_size_in_mb",
    "video_files_size_in_mb",
    "fps",
    "splits",
    "data_path",
    "video_path",
    "features",
}
ROW_KEYS = {
    "episode_index",
    "tasks",
    "length",
    "data/chunk_index",
    "data/file_index",
    "dataset_from_index",
    "dataset_to_index",
    "meta/episodes/chunk_index",
    "meta/episodes/file_index",
}
VIDEO_KEY = "observation.images.front"
VIDEO_ROW_KEYS = {
    f"videos/{VIDEO_KEY}/{k}"
    for k in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
}
DEFAULT_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}
DATA_COLUMNS = [
    "observation.state",
    "observation.achieved_goal",
    "observation.desired_goal",
    "action",
    "action_applied",
    "next.reward",
    "next.success",
    "next.done",
    "intervention",
    "timestamp",
    "frame_index",
    "episode_index",
    "index",
    "task_index",
]


def test_conformance_layout_info_rows(recorded: tuple[Path, list]) -> None:
    path, _ = recorded
    info = json.loads((path / "meta/info.json").read_text())
    assert set(info) >= INFO_KEYS
    assert info["codebase_version"] == "v3.0"
    assert isinstance(info["fps"], int) and info["fps"] == FPS
    assert info["total_episodes"] == 3 and info["total_frames"] == sum(LENGTHS)
    assert info["total_tasks"] == 2 and info["chunks_size"] == 1000
    assert info["splits"] == {"train": "0:3"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert (
        info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    )
    feats = info["features"]
    for k, dt in DEFAULT_FEATURES.items():
        assert feats[k] == {"dtype": dt, "shape": [1], "names": None}
    v = feats[VIDEO_KEY]
    assert v["dtype"] == "video" and v["shape"] == [64, 64, 3]
    assert v["names"] == ["height", "width", "channels"]
    assert v["info"]["video.codec"] == "h264" and v["info"]["video.pix_fmt"] == "yuv420p"
    assert v["info"]["video.fps"] == FPS
    assert feats["observation.state"]["names"] == ["x", "y", "cos_theta", "sin_theta", "wl", "wr"]
    assert info["sim2pi"]["robot_hash"] == "0123456789abcdef"
    assert info["sim2pi"]["spec"] == make_spec().to_dict()
    # data: exactly the non-video features, in info order; LeRobot's glob sees exactly our files
    data_files = sorted((path / "data").glob("*/*.parquet"))
    assert [p.relative_to(path).as_posix() for p in data_files] == [
        f"data/chunk-000/file-{i:03d}.parquet" for i in range(3)
    ]
    non_video = [k for k, f in feats.items() if f["dtype"] != "video"]
    assert non_video == DATA_COLUMNS
    for p in data_files:
        assert pq.read_schema(p).names == DATA_COLUMNS
    # episode rows: row k is episode k, found by position across sorted files
    meta_files = sorted((path / "meta/episodes").glob("*/*.parquet"))
    rows = [r for p in meta_files for r in pq.read_table(p).to_pylist()]
    assert [r["episode_index"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert set(r) >= ROW_KEYS | VIDEO_ROW_KEYS
        assert r["dataset_to_index"] - r["dataset_from_index"] == r["length"]
        for feat in feats:
            for stat in ("min", "max", "mean", "std", "count"):
                assert f"stats/{feat}/{stat}" in r
    assert [r["dataset_from_index"] for r in rows] == [0, 12, 19]
    assert rows[1][f"videos/{VIDEO_KEY}/to_timestamp"] == pytest.approx(7 / FPS)
    # tasks: sorted by task_index; pandas-indexed by the task string
    t = pq.read_table(path / "meta/tasks.parquet")
    assert t.column("task_index").to_pylist() == [0, 1]
    assert t.column("task").to_pylist() == list(TASKS)
    # videos: frame k at k / fps, exactly `length` frames
    import av

    for i, n in enumerate(LENGTHS):
        with av.open(str(path / f"videos/{VIDEO_KEY}/chunk-000/file-{i:03d}.mp4")) as c:
            s = c.streams.video[0]
            times = sorted(float(p.pts * s.time_base) for p in c.demux(s) if p.pts is not None)
        assert len(times) == n
        np.testing.assert_allclose(times, np.arange(n) / FPS, atol=1e-6)
    # no temporary names anywhere
    assert not [p for p in path.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_temporary_names_are_invisible_to_lerobots_glob(tmp_path: Path) -> None:
    """An interrupted save leaves `file-XXX.parquet.tmp` beside the final name: not *.parquet, not
    hidden, not in a subfolder, so `sorted(glob("*/*.parquet"))` never picks it up."""
    spec = make_spec()
    w = DatasetWriter.create(tmp_path / "d", spec, FPS)
    w.start_episode("reach the goal")
    for f in synthetic_episode(0, 60, spec):  # past the encoder's lookahead: packets are written
        w.add_frame(f)
    for _ in range(500):  # the encoder thread opens its file right after the first frame
        tmp = list((tmp_path / "d").rglob("*.tmp"))
        if tmp:
            break
        time.sleep(0.01)
    assert tmp and all(p.parent.name == "chunk-000" and not p.name.startswith(".") for p in tmp)
    (tmp_path / "d/data/chunk-000").mkdir(parents=True)
    (tmp_path / "d/data/chunk-000/file-000.parquet.tmp").write_bytes(b"partial")
    assert sorted((tmp_path / "d/data").glob("*/*.parquet")) == []
    w.discard_episode()
    w.close()
    assert [p.level for p in validate(tmp_path / "d")] == ["warning"]
    rep = recover(tmp_path / "d")
    assert "data/chunk-000/file-000.parquet.tmp" in rep.removed
    assert validate(tmp_path / "d") == []


def test_hf_datasets_and_pandas_read_the_files(
    recorded: tuple[Path, list], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What LeRobot does with the files: HF `datasets` loads data/ with features built from
    info.json (shape (1,) → Value, (D,) → fixed-length list), pandas reads tasks by index."""
    import datasets  # dev extra: required, never skipped
    import pandas as pd

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    path = recorded[0]
    info = json.loads((path / "meta/info.json").read_text())
    feats = {}
    for k, ft in info["features"].items():
        if ft["dtype"] == "video":
            continue
        v = datasets.Value(ft["dtype"])
        feats[k] = v if ft["shape"] == [1] else datasets.Sequence(v, length=ft["shape"][0])
    features = datasets.Features(feats)
    parts = [
        datasets.Dataset.from_parquet(str(p), features=features, cache_dir=str(tmp_path / "hf"))
        for p in sorted((path / "data").glob("*/*.parquet"))
    ]
    hf = datasets.concatenate_datasets(parts)
    assert len(hf) == sum(LENGTHS)
    assert hf[13]["index"] == 13 and hf[13]["episode_index"] == 1
    np.testing.assert_allclose(hf[13]["observation.state"], recorded[1][1][1]["observation"])
    tasks = pd.read_parquet(path / "meta/tasks.parquet")
    assert tasks.iloc[1].name == TASKS[1]
    assert int(tasks.loc[TASKS[0]].task_index) == 0


# ------------------------------------------------------------------------------ bad input


def _one(path: Path) -> list[str]:
    errs = errors(path, deep=True)
    assert errs, "validate found nothing"
    return errs


def test_truncated_parquet_is_named_and_repaired(
    recorded: tuple[Path, list], tmp_path: Path
) -> None:
    path = copy(recorded[0], tmp_path)
    bad = path / "data/chunk-000/file-001.parquet"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    errs = _one(path)
    assert any("episode 1" in e and "data/chunk-000/file-001.parquet" in e for e in errs), errs
    keep0 = (path / "data/chunk-000/file-000.parquet").read_bytes()
    report = repair(path)
    assert report.episodes == 2 and report.renumbered == {2: 1}
    assert errors(path, deep=True) == []
    assert (path / "data/chunk-000/file-000.parquet").read_bytes() == keep0  # untouched
    ds = Dataset.open(path)
    np.testing.assert_array_equal(
        ds.episode(1)["action"], np.stack([f["action"] for f in recorded[1][2]])
    )
    assert (path / "quarantine").exists()


def test_truncated_mp4_is_named_and_repaired(recorded: tuple[Path, list], tmp_path: Path) -> None:
    path = copy(recorded[0], tmp_path)
    bad = path / f"videos/{VIDEO_KEY}/chunk-000/file-002.mp4"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size * 2 // 3])
    errs = _one(path)
    assert any("episode 2" in e and "file-002.mp4" in e for e in errs), errs
    keep = [(path / f"data/chunk-000/file-00{i}.parquet").read_bytes() for i in range(2)]
    report = repair(path)
    assert report.episodes == 2 and report.renumbered == {}
    assert errors(path, deep=True) == []
    assert [(path / f"data/chunk-000/file-00{i}.parquet").read_bytes() for i in range(2)] == keep
    assert Dataset.open(path).episode(1)["image"].shape[0] == LENGTHS[1]


def test_info_disagreeing_with_files_is_named_and_repaired(
    recorded: tuple[Path, list], tmp_path: Path
) -> None:
    path = copy(recorded[0], tmp_path)
    info = json.loads((path / "meta/info.json").read_text())
    info["total_frames"] += 5
    info["total_episodes"] = 7
    (path / "meta/info.json").write_text(json.dumps(info))
    errs = _one(path)
    assert any("meta/info.json" in e and "total_episodes" in e for e in errs)
    assert any("meta/info.json" in e and "total_frames" in e for e in errs)
    repair(path)
    assert errors(path) == []
    assert Dataset.open(path).num_frames == sum(LENGTHS)


def test_missing_episode_file_is_named_and_repaired(
    recorded: tuple[Path, list], tmp_path: Path
) -> None:
    path = copy(recorded[0], tmp_path)
    (path / "data/chunk-000/file-002.parquet").unlink()
    errs = _one(path)
    assert any("episode 2" in e and "data file is missing" in e for e in errs), errs
    repair(path)
    assert errors(path, deep=True) == []
    assert Dataset.open(path).num_episodes == 2


def test_missing_episode_metadata_is_rebuilt(recorded: tuple[Path, list], tmp_path: Path) -> None:
    path = copy(recorded[0], tmp_path)
    (path / "meta/episodes/chunk-000/file-001.parquet").unlink()
    errs = _one(path)
    assert any("row 1 holds episode 2" in e for e in errs), errs
    (path / "meta/info.json").write_text("{ not json")
    assert any("info.json" in e for e in errors(path))
    report = repair(path)
    assert report.episodes == 3 and report.quarantined == []
    assert errors(path, deep=True) == []
    ep = Dataset.open(path).episode(1)
    np.testing.assert_array_equal(
        ep["observation"], np.stack([f["observation"] for f in recorded[1][1]])
    )


def test_stray_parquet_and_stale_stats_are_reported(
    recorded: tuple[Path, list], tmp_path: Path
) -> None:
    path = copy(recorded[0], tmp_path)
    shutil.copy(path / "data/chunk-000/file-000.parquet", path / "data/chunk-000/file-009.parquet")
    (path / "data/chunk-000/sub").mkdir()
    stats = json.loads((path / "meta/stats.json").read_text())
    stats["action"]["mean"] = [9.0, 9.0]
    (path / "meta/stats.json").write_text(json.dumps(stats))
    errs = errors(path)
    assert any("file-009.parquet" in e and "no episode" in e for e in errs), errs
    assert any("data/chunk-000/sub" in e for e in errs), errs
    assert any("stats.json" in e and "'action'" in e for e in errs), errs


# ------------------------------------------------------------------------------ compaction


def test_compact_merges_and_keeps_content(recorded: tuple[Path, list], tmp_path: Path) -> None:
    path = copy(recorded[0], tmp_path)
    before = Dataset.open(path)
    eps = [before.episode(i) for i in range(3)]
    r = compact(path)
    assert (r.data_files_before, r.data_files_after, r.meta_files_after) == (3, 1, 1)
    assert len(list((path / "data").glob("*/*.parquet"))) == 1
    assert len(list((path / f"videos/{VIDEO_KEY}").glob("*/*.mp4"))) == 1
    assert errors(path, deep=True) == []
    after = Dataset.open(path)
    for i in range(3):
        e = after.episode(i)
        for k in ("observation", "action", "reward", "image"):
            np.testing.assert_array_equal(e[k], eps[i][k], err_msg=f"{i} {k}")
    # recording continues after compaction, and a second compaction merges again
    record(path, make_spec(), [4], FPS, resume=True)
    assert errors(path) == []
    compact(path)
    assert errors(path, deep=True) == []
    assert [len(e) for e in Dataset.open(path).episodes(load_images=False)] == [*LENGTHS, 4]


def test_compact_respects_size_limit(recorded: tuple[Path, list], tmp_path: Path) -> None:
    path = copy(recorded[0], tmp_path)
    size = (path / "data/chunk-000/file-000.parquet").stat().st_size / 2**20
    r = compact(path, max_data_mb=size * 1.5)
    assert r.data_files_after >= 2
    assert errors(path, deep=True) == []


def test_chunk_rollover_after_1000_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slot 1000 is chunk-001/file-000 (a chunk folder holds file-000 .. file-999)."""
    from deploy import dataset as dsmod

    assert dsmod.data_rel(999) == "data/chunk-000/file-999.parquet"
    assert dsmod.data_rel(1000) == "data/chunk-001/file-000.parquet"
    spec = make_spec(with_image=False)
    record(tmp_path / "d", spec, [3], FPS)
    with DatasetWriter.open(tmp_path / "d") as w:
        w._next_slot = 999  # as if 999 slots were used (e.g. by compactions)
        for e in (1, 2):
            w.start_episode("reach the goal")
            for f in synthetic_episode(e, 3, spec):
                w.add_frame(f)
            w.save_episode()
    names = [
        p.relative_to(tmp_path / "d").as_posix()
        for p in sorted((tmp_path / "d/data").glob("*/*.parquet"))
    ]
    assert names == [
        "data/chunk-000/file-000.parquet",
        "data/chunk-000/file-999.parquet",
        "data/chunk-001/file-000.parquet",
    ]
    assert errors(tmp_path / "d") == []
    assert os.path.exists(tmp_path / "d/meta/episodes/chunk-001/file-000.parquet")
    assert Dataset.open(tmp_path / "d").num_episodes == 3
