"""Episode store (windows, weights, validation), evaluation outputs, DAgger and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from agent.data import EpisodeStore, check_episode, load_dataset, save_dataset
from agent.evaluate import evaluate, wilson_interval
from hardware.errors import SpecMismatch


def test_windows_pad_with_the_first_observation(reach_spec, reach_demos) -> None:  # type: ignore[no-untyped-def]
    store = EpisodeStore(reach_spec, reach_demos[:3])
    n0 = len(reach_demos[0]["action"])
    idx = np.array([0, 1, n0, n0 + 4])  # starts and insides of episodes 0 and 1
    w = store.windows(idx, 3)["observation"]
    ep0, ep1 = reach_demos[0]["observation"], reach_demos[1]["observation"]
    np.testing.assert_array_equal(w[0], ep0[[0, 0, 0]])
    np.testing.assert_array_equal(w[1], ep0[[0, 0, 1]])
    np.testing.assert_array_equal(w[2], ep1[[0, 0, 0]])  # never leaks episode 0 into episode 1
    np.testing.assert_array_equal(w[3], ep1[[2, 3, 4]])
    goal = np.float32([[0.1, 0.2]] * 4)
    wg = store.windows(idx, 3, goal)["desired_goal"]
    assert wg.shape == (4, 3, 2) and np.all(wg == goal[:, None])
    back = store.episodes()
    assert len(back) == 3 and np.array_equal(back[1]["action"], reach_demos[1]["action"])


def test_intervention_episodes_are_sampled_with_their_weight(reach_spec, reach_demos) -> None:  # type: ignore[no-untyped-def]
    eps = [dict(e) for e in reach_demos[:4]]
    eps[0]["intervention"] = np.zeros(len(eps[0]["action"]), bool)
    eps[0]["intervention"][3] = True  # a human took over once in episode 0
    store = EpisodeStore(reach_spec, eps, intervention_weight=5.0)
    idx = store.sample_indices(50_000, np.random.default_rng(0))
    share = np.mean(store.episode[idx] == 0)
    n = np.array([len(e["action"]) for e in eps], float)
    expected = 5 * n[0] / (5 * n[0] + n[1:].sum())
    assert abs(share - expected) < 0.01


def test_episode_validation_names_the_feature(reach_spec, reach_demos) -> None:  # type: ignore[no-untyped-def]
    ep = dict(reach_demos[0])
    ep["observation"] = ep["observation"][:, :5]
    with pytest.raises(SpecMismatch, match="'observation'"):
        check_episode(reach_spec, ep)
    ep = {k: v for k, v in reach_demos[0].items() if k != "desired_goal"}
    with pytest.raises(SpecMismatch, match="desired_goal"):
        check_episode(reach_spec, ep)
    bare = {k: reach_demos[0][k] for k in (*reach_spec.observation, "action")}
    filled = check_episode(reach_spec, bare)
    assert filled["done"][-1] and not filled["done"][:-1].any()
    # Recomputed from the next achieved goal (the last step has none recorded: not compared).
    np.testing.assert_array_equal(filled["success"][:-1], reach_demos[0]["success"][:-1])


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(190, 200)
    assert lo == pytest.approx(0.9104, abs=1e-3) and hi == pytest.approx(0.9727, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_evaluate_writes_video_plot_and_figures(reach_spec, reach_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import av

    from agent.configs import GCBCConfig
    from agent.gcbc import train

    res = train(
        GCBCConfig(
            out=str(tmp_path / "r"), steps=20, hidden=(32,), eval_episodes=0, progress=False
        ),
        episodes=reach_demos,
        spec=reach_spec,
    )
    ev = evaluate(
        res.policy, episodes=3, video=tmp_path / "v.mp4", video_episodes=1, plot=tmp_path / "p.png"
    )
    assert ev["episodes"] == 3 and 0 <= ev["ci95"][0] <= ev["success_rate"] <= ev["ci95"][1]
    assert ev["seeds"][0] >= 1_000_000  # held-out goals
    with av.open(str(tmp_path / "v.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) > 5
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_dagger_aggregates_expert_labels(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from agent.checkpoint import read_meta
    from agent.configs import DaggerConfig
    from agent.dagger import train_dagger

    cfg = DaggerConfig(
        task="reach",
        demos=5,
        out=str(tmp_path / "d"),
        rounds=2,
        episodes_per_round=3,
        steps=50,
        steps_per_round=20,
        batch_size=64,
        hidden=(32,),
        eval_episodes=2,
        progress=False,
        beta=0.5,
        beta_decay=0.5,
    )
    assert cfg.beta_at(1) == 0.5 and cfg.beta_at(2) == 0.25
    out = train_dagger(cfg)
    rounds = out["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["episodes"] == 5 and rounds[2]["episodes"] == 11
    assert rounds[2]["data_steps"] > rounds[1]["data_steps"] > rounds[0]["data_steps"]
    meta = read_meta(tmp_path / "d")
    assert meta.algo == "dagger" and meta.step == 90


def test_cli_train_eval_export_from_a_dataset_on_disk(
    reach_spec, reach_demos, desc, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from deploy.cli import app

    data = save_dataset(tmp_path / "data", reach_spec, reach_demos[:10], robot=desc)
    spec, _, info = load_dataset(data)
    assert spec == reach_spec and info["num_episodes"] == 10
    runner = CliRunner()
    h = runner.invoke(app, ["train", "gcbc", "--help"])
    assert h.exit_code == 0
    for opt in (
        "--relabel",
        "--head",
        "--history",
        "--steps",
        "--seed",
        "--eval-every",
        "--resume",
    ):
        assert opt in h.output
    run = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "train",
            "gcbc",
            "--data",
            str(data),
            "--out",
            str(run),
            "--steps",
            "40",
            "--hidden",
            "32,32",
            "--eval-episodes",
            "2",
            "--head",
            "discrete",
            "--history",
            "2",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["eval", str(run), "--episodes", "2", "--json", str(tmp_path / "e.json"), "--no-video"]
    )
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "e.json").read_text())
    assert {"success_rate", "episodes", "ci95", "mean_final_distance"} <= set(res)
    assert (run / "eval" / "trajectories.png").exists()
    r = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "bundle")])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert meta["history"] == 2 and meta["policy"]["head"] == "discrete"
    assert meta["training"]["dataset"] == str(data)
    assert meta["training"]["eval"]["heldout"]["episodes"] == 2
    assert meta["training"]["export_parity"]["max_abs_diff"] <= 1e-5


def test_random_shift_moves_whole_windows_consistently() -> None:
    from agent.gcbc import random_shift

    rng = np.random.default_rng(0)
    img = np.zeros((8, 2, 16, 16, 3), np.uint8)
    img[:, :, 6:10, 6:10] = 255  # a square in the middle of both frames
    out = random_shift(img, 3, rng)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, 0], out[:, 1])  # same shift for every frame
    centres = [np.argwhere(o[0, ..., 0] == 255).mean(0) for o in out]
    assert len({tuple(c) for c in centres}) > 1  # different windows move differently
    assert all(np.all(np.abs(c - 7.5) <= 3) for c in centres)
    np.testing.assert_array_equal(random_shift(img, 0, rng), img)


def test_summary_reports_ground_truth_success_next_to_the_estimate() -> None:
    """Push success is judged on the camera's box estimate; the summary also gives the truth."""
    from agent.evaluate import summarize
    from agent.rollout import collect_episodes

    _, stats = collect_episodes("push", 4, seed=5)
    assert all(s.true_success is not None and s.true_final_distance is not None for s in stats)
    for s in stats:  # the twin's truth: the true box within the task's 5 cm of the goal
        assert s.true_success == (s.true_final_distance < 0.05)
    res = summarize(stats)
    assert res["true_success_rate"] == pytest.approx(np.mean([s.true_success for s in stats]))
    assert res["success_rate"] == pytest.approx(np.mean([s.success for s in stats]))
    truth = [s.true_final_distance for s in stats]
    assert res["median_true_final_distance"] == pytest.approx(np.median(truth))
