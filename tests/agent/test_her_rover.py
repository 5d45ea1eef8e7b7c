"""SAC+HER on the rover twin: demos from a recorded dataset, export parity, the twin runtime, and
(expensive) learning RoverReach."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pybullet")

from agent.her import HerConfig, load_demo_replay, task_setup, train
from agent.her_envs import GoalObs, LocalEnvs, make_env_fn
from hardware.errors import Sim2PiError

ROOT = Path(__file__).resolve().parents[2]


def sim2pi(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module", params=["gaussian", "discrete"])
def reach_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, object]:
    """A briefly trained reach run (not a good policy: for format and plumbing tests), with
    either actor head."""
    out = tmp_path_factory.mktemp("her") / "run"
    cfg = HerConfig(
        task="reach",
        actor=request.param,
        envs=4,
        workers=0,
        total_steps=1600,
        learning_starts=800,
        eval_every=1600,
        eval_episodes=4,
        eval_envs=4,
        out=str(out),
        log_every=1e9,
    )
    res = train(cfg)
    return out, res


def test_export_parity_and_twin_runtime_smoke(reach_run, tmp_path: Path) -> None:
    import onnxruntime as ort

    from agent.export import export_run

    run, res = reach_run
    bundle = tmp_path / "bundle"
    summary = export_run(run, bundle, samples=256, tolerance=1e-5)
    assert summary["parity_max_abs_diff"] <= 1e-5
    # the ONNX graph reproduces the actor's deterministic action on real env observations
    envs = LocalEnvs([make_env_fn("sim2pi/RoverReach-v0")] * 4)
    try:
        obs = envs.reset(seed=123)
        rows = [obs]
        for _ in range(20):
            envs.step_async(np.random.default_rng(0).uniform(-1, 1, (4, 2)).astype(np.float32))
            rows.append(envs.step_wait().obs)
    finally:
        envs.close()
    o = GoalObs(*(np.concatenate(c) for c in zip(*rows)))
    sess = ort.InferenceSession(str(bundle / "policy.onnx"), providers=["CPUExecutionProvider"])
    feeds = {
        "observation": o.observation[:, None],
        "achieved_goal": o.achieved_goal[:, None],
        "desired_goal": o.desired_goal[:, None],
    }
    onnx_action = sess.run(["action"], feeds)[0]
    np.testing.assert_allclose(onnx_action, res.agent.deterministic(o), atol=1e-5)
    # the bundle runs on the twin through the one control loop
    report = tmp_path / "run.json"
    r = sim2pi(
        "deploy",
        "run",
        str(bundle),
        "--backend",
        "twin",
        "-n",
        "1",
        "--unpaced",
        "--max-steps",
        "40",
        "--json",
        str(report),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert report.exists()


def test_best_checkpoint_evaluates_and_exports_on_its_own(reach_run, tmp_path: Path) -> None:
    run, _ = reach_run
    best = run / "best"
    report = tmp_path / "eval.json"
    r = sim2pi("eval", str(best), "-n", "2", "--no-video", "--no-plot", "--json", str(report))
    assert r.returncode == 0, r.stdout + r.stderr
    assert 0.0 <= json.loads(report.read_text())["success_rate"] <= 1.0
    r = sim2pi("export", str(best), "--out", str(tmp_path / "bundle"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "bundle" / "policy.onnx").exists()


@pytest.mark.parametrize("actor", ["gaussian", "discrete"])
def test_demos_from_a_recorded_dataset(tmp_path: Path, actor: str) -> None:
    data = tmp_path / "demos"
    r = sim2pi(
        "record",
        "--robot",
        "sim",
        "--teleop",
        "expert",
        "--task",
        "reach",
        "-n",
        "3",
        "--noise",
        "0.2",
        "--out",
        str(data),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    from deploy.dataset import Dataset

    ds = Dataset.open(data, load_images=False)
    lengths = [len(ds.episode(i)) for i in range(ds.num_episodes)]
    cfg = HerConfig(task="reach", demos=str(data))
    spec, _, max_steps, success = task_setup(cfg)
    assert spec.task == "reach"
    from hardware.tasks import compute_reward

    def reward(a, d, info):
        return compute_reward("reach", a, d, info)

    replay = load_demo_replay(data, cfg, max_steps, 6, 2, 2, reward, success, spec=spec)
    assert replay.n_episodes == 3 and replay.n_transitions == sum(n - 1 for n in lengths)
    ep0 = ds.episode(0)
    # the critics get what the motors got (DART noise included), BC the expert's clean action
    n0 = lengths[0] - 1
    np.testing.assert_array_equal(replay.action[0, :n0], ep0["action_applied"][:-1])
    np.testing.assert_array_equal(replay.label[0, :n0], ep0["action"][:-1])
    assert np.abs(replay.action[0, :n0] - replay.label[0, :n0]).mean() > 0.05
    # the expert reached its goals, so the real (not relabeled) goal of the last stored
    # transitions is close, and relabeled samples are successes at the right rate
    b = replay.sample(4000)
    assert (b.reward[b.relabeled & (b.goal_t == b.t + 1)] == 0).all()
    # a short training run with demos mixed into every batch runs through, with either actor
    res = train(
        HerConfig(
            task="reach",
            actor=actor,
            envs=2,
            workers=0,
            total_steps=400,
            learning_starts=200,
            demos=str(data),
            bc_pretrain=300,  # clone the demos first, then hold the actor for 50 critic steps
            critic_warmup=50,
            eval_episodes=0,
            log_every=1e9,
            batch_size=64,
        )
    )
    assert res.updates > 0
    assert res.agent.discrete == (actor == "discrete")


@pytest.mark.expensive
def test_learns_rover_reach() -> None:
    """Sparse-reward RoverReach to >= 90 % deterministic success in 40k env steps (~1-2 min on
    two idle cores; typically 12-20k steps)."""
    res = train(
        HerConfig(
            task="reach",
            envs=8,
            workers=1,
            total_steps=40_000,
            minutes=10,
            eval_every=4000,
            eval_episodes=50,
            target_success=0.95,
            seed=0,
            log_every=1e9,
        )
    )
    best = max(h["success_rate"] for h in res.history)
    assert best >= 0.9, json.dumps(res.history)


def test_true_achieved_goal_survives_worker_autoreset() -> None:
    """Both env batches carry the twin's true box next to the camera's estimate, also across the
    autoreset of ended episodes, and agree with each other step for step."""
    from agent.her_envs import ProcessEnvs

    fn = make_env_fn("sim2pi/RoverPush-v0", max_steps=3)
    local, procs = LocalEnvs([fn] * 2), ProcessEnvs([fn] * 2, num_workers=1)
    try:
        a, b = local.reset(seed=5), procs.reset(seed=5)
        np.testing.assert_allclose(a.truth, b.truth)
        acts = np.random.default_rng(0).uniform(-1, 1, (5, 2, 2)).astype(np.float32)
        for t in range(5):
            local.step_async(acts[t])
            procs.step_async(acts[t])
            ra, rb = local.step_wait(), procs.step_wait()
            for x, y in [
                (ra.obs.truth, rb.obs.truth),
                (ra.final_true_achieved_goal, rb.final_true_achieved_goal),
                (ra.final_achieved_goal, rb.final_achieved_goal),
            ]:
                np.testing.assert_allclose(x, y, atol=1e-6)
            done = ra.terminated | ra.truncated
            assert done.any() == (t == 2)  # max_steps=3: both end on the third step
            for i, env in enumerate(local.envs):  # the next observation's truth is the true box
                box = env.unwrapped.robot.object_pose("box")[:2]
                np.testing.assert_allclose(ra.obs.truth[i], box, atol=1e-5)
    finally:
        local.close()
        procs.close()


def test_restarts_from_demo_states() -> None:
    """Demo states become reset options (seen boxes only, inside the walls) and a restart puts
    the robot, box and goal exactly there."""
    import gymnasium as gym

    from agent.her import demo_start_states
    from agent.her_buffer import EpisodeReplay
    from agent.her_envs import StartStates

    spec, _, max_steps, _ = task_setup(HerConfig(task="push"))
    # x, y, cos, sin, wheel l, r, box x, y, seen
    obs = np.array(
        [
            [0.0, 0.0, 1, 0, 0, 0, 0.3, 0.0, 1],  # kept
            [0.1, 0.0, 1, 0, 0, 0, 0.15, 0.0, 0],  # box not seen in this frame: stale
            [0.2, 0.0, 1, 0, 0, 0, 0.25, 0.0, 1],  # box estimate under the robot
            [0.0, 0.88, 0, 1, 0, 0, 0.3, 0.0, 1],  # robot against the wall
            [-0.2, 0.1, 0, 1, 0, 0, -0.2, 0.4, 1],  # kept (heading +90 deg)
            [0.0, 0.0, 1, 0, 0, 0, 0.3, 0.0, 1],  # final observation: not a start
        ],
        np.float32,
    )
    replay = EpisodeReplay(9, 2, 2, max_steps, max_steps, reward_fn=lambda a, d, i: -1.0)
    replay.add_episode(obs, obs[:, 6:8], np.array([0.5, 0.5]), np.zeros((5, 2)))
    states = demo_start_states(replay, spec)
    assert len(states) == 2
    np.testing.assert_allclose(states[0]["pose"], (0.0, 0.0, 0.0), atol=1e-6)
    np.testing.assert_allclose(states[1]["pose"], (-0.2, 0.1, np.pi / 2), atol=1e-6)
    np.testing.assert_allclose(states[1]["box"], (-0.2, 0.4), atol=1e-6)
    assert states[1]["goal"] == (0.5, 0.5)

    env = StartStates(gym.make("sim2pi/RoverPush-v0"), [(states[1:], 1.0)])
    _, info = env.reset(seed=0)
    np.testing.assert_allclose(info["true_pose"], states[1]["pose"], atol=1e-6)
    np.testing.assert_allclose(info["true_box"], states[1]["box"], atol=1e-6)
    env.close()
    # shares: half of the resets from a near-box curriculum, the others random
    from sim.backend import push_starts_near_box

    near = push_starts_near_box(50, seed=1)
    env = StartStates(gym.make("sim2pi/RoverPush-v0"), [(near, 0.5), (states, 0.0)])
    boxes = {tuple(s["box"]) for s in near}
    picked = []
    for i in range(40):
        _, info = env.reset(seed=i)
        box = min(boxes, key=lambda b: np.hypot(*(np.asarray(b) - info["true_box"])))
        picked.append(bool(np.allclose(box, info["true_box"], atol=1e-6)))
        if picked[-1]:  # robot 0.2-0.4 m from the box, facing it within 45 degrees
            rel = info["true_box"] - info["true_pose"][:2]
            assert 0.2 - 1e-6 <= np.hypot(*rel) <= 0.4 + 1e-6
            err = np.angle(np.exp(1j * (np.arctan2(rel[1], rel[0]) - info["true_pose"][2])))
            assert abs(err) <= np.radians(45) + 1e-6
    assert 10 <= sum(picked) <= 30
    env.close()
    with pytest.raises(Sim2PiError, match="more than 1"):
        StartStates(gym.make("sim2pi/RoverPush-v0"), [(near, 0.7), (states, 0.6)])
    # behind: the robot on the far side of the box from the goal, so pushing on moves it there
    for s in push_starts_near_box(50, seed=2, behind=True):
        box, goal, pose = (np.asarray(s[k][:2]) for k in ("box", "goal", "pose"))
        to_goal, from_robot = goal - box, box - pose
        cos = to_goal @ from_robot / np.hypot(*to_goal) / np.hypot(*from_robot)
        assert cos >= np.cos(np.radians(45)) - 1e-6
    sides = [push_starts_near_box(50, seed=2, behind=b) for b in (False, True)]
    toward = [
        np.mean(
            [
                (np.subtract(s["goal"], s["box"]) @ np.subtract(s["box"], s["pose"][:2])) > 0
                for s in starts
            ]
        )
        for starts in sides
    ]
    assert toward[0] < 0.8 and toward[1] == 1.0


def test_reverse_curriculum_starts_widen_from_the_goal_to_the_task() -> None:
    """Level 0: box on its goal, robot 0.22-0.3 m behind it (far side from the goal) and facing
    it; level 1: the task's own box-goal distances and the robot on any side; and the env
    starts exactly there."""
    import gymnasium as gym

    from sim.backend import PUSH_GOAL_DISTANCE, push_reverse_start

    rng = np.random.default_rng(0)

    def geometry(level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d, cos, r = [], [], []
        for _ in range(300):
            s = push_reverse_start(rng, level)
            box, goal, pose = (np.asarray(s[k], float) for k in ("box", "goal", "pose"))
            to_goal, from_robot = goal - box, box - pose[:2]
            d.append(np.hypot(*to_goal))
            r.append(np.hypot(*from_robot))
            cos.append(to_goal @ from_robot / max(d[-1], 1e-12) / r[-1])
        return np.array(d), np.array(cos), np.array(r)

    d, cos, r = geometry(0.1)  # (at level 0 the box is on the goal: no direction to check)
    assert np.all(d <= 0.05 + 1e-9) and np.all(cos >= np.cos(np.radians(36)) - 1e-9)
    d, cos, r = geometry(0.0)
    np.testing.assert_allclose(d, 0.0, atol=1e-9)
    assert np.all((r >= 0.22 - 1e-9) & (r <= 0.3 + 1e-9))
    d, cos, r = geometry(1.0)
    lo, hi = PUSH_GOAL_DISTANCE
    assert np.all((d >= lo - 1e-9) & (d <= hi + 1e-9)) and np.ptp(d) > 0.25
    assert cos.min() < -0.5 and r.max() > 0.5  # any side, further away
    with pytest.raises(Sim2PiError, match="level"):
        push_reverse_start(rng, 1.5)

    s = push_reverse_start(rng, 0.3)
    env = gym.make("sim2pi/RoverPush-v0")
    _, info = env.reset(seed=0, options={"start": s})
    np.testing.assert_allclose(info["true_pose"], s["pose"], atol=1e-6)
    np.testing.assert_allclose(info["true_box"], s["box"], atol=1e-6)
    env.close()


def near_goal(rng: np.random.Generator, level: float) -> dict:
    """A start whose box already sits on its goal (a success on the first step), at any level."""
    return {"pose": (0.0, 0.0, 0.0), "box": (0.3, 0.0), "goal": (0.3 + 0.02 * level, 0.0)}


def test_curriculum_counts_episodes_and_its_level_reaches_the_workers() -> None:
    """StartStates counts its curriculum episodes and their successes (judged on the given info
    keys), poll_curriculum collects the counts and raises the level in every env, in this process
    and in the worker processes; an episode that straddles a level change is not counted."""
    from agent.her_envs import (
        Curriculum,
        LevelSchedule,
        ProcessEnvs,
        poll_curriculum,
        with_start_states,
    )
    from sim.backend import push_reverse_start

    fn = make_env_fn("sim2pi/RoverPush-v0", max_steps=3)
    acts = np.zeros((2, 2), np.float32)

    def run_steps(envs, n: int) -> None:
        envs.reset(seed=0)
        for _ in range(n):
            envs.step_async(acts)
            envs.step_wait()

    # a start that is a success at once (the episode ends on its first step): every episode
    # counts, and succeeds
    local = LocalEnvs([with_start_states(fn, [(Curriculum(near_goal), 1.0)], ["true_success"])] * 2)
    try:
        run_steps(local, 3)
        assert local.call("curriculum_stats") == ((3, 3), (3, 3))
        assert local.call("curriculum_stats") == ((0, 0), (0, 0))  # handed over once
        schedule = LevelSchedule(threshold=0.9, min_episodes=4)
        run_steps(local, 1)
        assert not poll_curriculum(local, schedule) and schedule.level == 0.0  # 2 < 4 episodes
        run_steps(local, 1)
        assert poll_curriculum(local, schedule) and schedule.level == pytest.approx(0.1)
        assert all(g[0][0].level == pytest.approx(0.1) for g in local.call("groups"))
    finally:
        local.close()
    # the same successes judged on a key the env never sets: counted, never a success
    local = LocalEnvs([with_start_states(fn, [(Curriculum(near_goal), 1.0)], ["no_such_key"])])
    try:
        run_steps(local, 2)
        assert local.call("curriculum_stats") == ((2, 0),)
    finally:
        local.close()
    # an episode that started before the level changed is not counted at the new level
    local = LocalEnvs([with_start_states(fn, [(Curriculum(push_reverse_start), 1.0)], ["x"])])
    try:
        local.call("set_curriculum_level", 1.0)  # the task's starts: no success in 3 steps
        run_steps(local, 1)  # an episode under way at level 1 (max_steps=3)
        local.call("set_curriculum_level", 0.9)
        for _ in range(2):  # it ends here (the env auto-resets; the next one starts at 0.9)
            local.step_async(acts[:1])
            local.step_wait()
        assert local.call("curriculum_stats") == ((0, 0),)
        for _ in range(3):
            local.step_async(acts[:1])
            local.step_wait()
        assert local.call("curriculum_stats") == ((1, 0),)
    finally:
        local.close()

    # worker processes: half of the starts from the curriculum, the level set through call()
    procs = ProcessEnvs(
        [with_start_states(fn, [(Curriculum(push_reverse_start), 0.5)], ["true_success"])] * 2,
        num_workers=1,
    )
    try:
        run_steps(procs, 60)  # max_steps=3: 40 episodes end, unless a push succeeds sooner
        n = sum(e for e, _ in procs.call("curriculum_stats"))
        assert 8 <= n <= 32  # about half of them
        schedule = LevelSchedule(threshold=0.0, min_episodes=1)
        schedule.level = 0.5
        run_steps(procs, 6)
        assert poll_curriculum(procs, schedule)
        assert [g[0][0].level for g in procs.call("groups")] == [pytest.approx(0.6)] * 2
    finally:
        procs.close()


def test_train_moves_the_curriculum_by_its_step() -> None:
    """--curriculum-step reaches the schedule: every start from the curriculum, whose level-0
    starts are successes at once, so with a tiny threshold the level rises by 0.25 at each poll
    and the evaluations record levels on that grid (the default 0.1 would not)."""
    res = train(
        HerConfig(
            task="push",
            envs=4,
            workers=0,
            total_steps=4000,  # the curriculum is polled every 2000 env steps
            learning_starts=4000,
            eval_every=2000,
            eval_episodes=1,
            eval_envs=1,
            reverse_starts=1.0,
            curriculum_success=0.01,
            curriculum_step=0.25,
            log_every=1e9,
        )
    )
    levels = [h["curriculum_level"] for h in res.history]
    assert levels[-1] > 0.0, levels
    assert all(abs(lv * 4 - round(lv * 4)) < 1e-9 for lv in levels), levels
    assert any(abs(lv - 0.25) < 1e-9 or abs(lv - 0.75) < 1e-9 for lv in levels), levels


def test_training_episodes_can_end_where_the_rewards_put_the_goal() -> None:
    """episode_end='reward': the training env no longer ends on its own (estimate) test but where
    the reward's keys are all true; the default keeps the env's own end, as evaluation does."""
    from agent.her import curriculum_keys, success_keys, training_env_fn
    from sim.backend import push_reverse_start

    start = push_reverse_start(np.random.default_rng(0), 0.0)  # box on the goal: both say done
    zero = np.zeros(2, np.float32)

    def steps_to_end(fn) -> tuple[int, bool]:
        env = fn()
        try:
            env.reset(seed=0, options={"start": start})
            for t in range(1, 4):
                _, _, term, trunc, info = env.step(zero)
                if term or trunc:
                    return t, bool(info["is_success"])
            return 0, bool(info["is_success"])
        finally:
            env.close()

    kw = {"description": "rover"}
    push = HerConfig(task="push")
    assert success_keys(push) == ("true_success",)
    assert success_keys(HerConfig(task="push", reward_on="both")) == ("true_success", "is_success")
    # staged rewards end (and are terminal) where both are there, but the reverse curriculum
    # counts the truth alone, as with reward_on truth
    staged = HerConfig(task="push", reward_on="staged")
    assert success_keys(staged) == ("true_success", "is_success")
    assert curriculum_keys(staged) == ("true_success",)
    assert curriculum_keys(HerConfig(task="push", reward_on="both")) == success_keys(
        HerConfig(task="push", reward_on="both")
    )
    own = HerConfig(task="push", episode_end="reward")
    assert steps_to_end(training_env_fn(push, "sim2pi/RoverPush-v0", kw, ["x"])) == (1, True)
    assert steps_to_end(training_env_fn(own, "sim2pi/RoverPush-v0", kw, ["true_success"]))[0] == 1
    # a key never set: the env's own success (the estimate on the goal) no longer ends it
    assert steps_to_end(training_env_fn(own, "sim2pi/RoverPush-v0", kw, ["x"])) == (0, True)
    # rewards on the estimate: the env's own end, whatever episode_end says
    est = HerConfig(task="push", episode_end="reward", reward_on="estimate")
    assert steps_to_end(training_env_fn(est, "sim2pi/RoverPush-v0", kw, ["x"])) == (1, True)
    with pytest.raises(Sim2PiError, match="episode_end must be"):
        HerConfig(episode_end="never")
