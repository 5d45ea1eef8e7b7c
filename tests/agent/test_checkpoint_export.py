"""Checkpoints (round trip, seeds, resume) and ONNX export (checker, parity, bundle)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agent.checkpoint import load_policy, read_meta, save_checkpoint
from agent.configs import GCBCConfig, PolicyConfig
from agent.data import EpisodeStore, compute_stats
from agent.export import dataset_windows, export_bundle, parity
from agent.gcbc import train
from agent.policies import Policy
from hardware.errors import Sim2PiError


def quick_cfg(tmp_path, name: str, **kw) -> GCBCConfig:  # type: ignore[no-untyped-def]
    base = dict(
        out=str(tmp_path / name),
        steps=30,
        batch_size=64,
        hidden=(32, 32),
        eval_episodes=0,
        progress=False,
        save_every=0,
        log_every=10,
    )
    return GCBCConfig(**{**base, **kw})


def test_checkpoint_round_trip(reach_spec, reach_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = train(
        quick_cfg(tmp_path, "a", head="gmm", history=2, arch="gru"),
        episodes=reach_demos,
        spec=reach_spec,
    )
    policy, meta = load_policy(res.run)
    assert meta.algo == "gcbc" and meta.step == 30 and meta.policy == res.policy.config
    assert meta.spec == reach_spec and meta.robot_hash == reach_spec.robot_hash
    assert set(meta.stats) >= {"observation", "goal_delta"}
    store = EpisodeStore(reach_spec, reach_demos)
    w = store.windows(np.arange(200), 2)
    np.testing.assert_array_equal(policy.act(w), res.policy.act(w))
    for k, v in res.policy.state_dict().items():
        torch.testing.assert_close(policy.state_dict()[k], v, rtol=0, atol=0)
    files = {p.name for p in res.run.iterdir()}
    assert {"model.safetensors", "checkpoint.json", "config.json", "resume.pt", "tb"} <= files


def test_same_seed_same_weights_other_seed_other_weights(reach_spec, reach_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = train(quick_cfg(tmp_path, "s1", seed=3), episodes=reach_demos, spec=reach_spec).policy
    b = train(quick_cfg(tmp_path, "s2", seed=3), episodes=reach_demos, spec=reach_spec).policy
    c = train(quick_cfg(tmp_path, "s3", seed=4), episodes=reach_demos, spec=reach_spec).policy
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, rtol=0, atol=0)
    assert not torch.equal(a.trunk[0].weight, c.trunk[0].weight)


def test_resume_continues_exactly(reach_spec, reach_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    full = train(quick_cfg(tmp_path, "full", steps=40), episodes=reach_demos, spec=reach_spec)
    # A run that crashes right after its step-20 checkpoint ...
    inter = quick_cfg(tmp_path, "inter", steps=40, save_every=20)
    meta = _train_interrupted(inter, reach_spec, reach_demos, stop_at=20)
    assert meta is not None and meta.step == 20
    with pytest.raises(Sim2PiError, match="--resume"):
        train(quick_cfg(tmp_path, "inter", steps=40), episodes=reach_demos, spec=reach_spec)
    # ... resumes (weights, optimizer, RNG states) to the very same weights as an uninterrupted run.
    resumed = train(
        quick_cfg(tmp_path, "inter", steps=40, resume=True), episodes=reach_demos, spec=reach_spec
    )
    assert resumed.step == 40
    for k, v in full.policy.state_dict().items():
        torch.testing.assert_close(resumed.policy.state_dict()[k], v, rtol=0, atol=0)


class _Stop(Exception):
    pass


def _train_interrupted(cfg, spec, episodes, stop_at: int):  # type: ignore[no-untyped-def]
    """Train until ``stop_at`` steps, then raise (as a crash would) after the checkpoint."""

    def cb(step: int, total: int, scalars: dict) -> None:  # type: ignore[type-arg]
        if step >= stop_at:
            raise _Stop

    try:
        train(cfg, episodes=episodes, spec=spec, progress=cb)
    except _Stop:
        return read_meta(cfg.out)
    return None


def test_checkpoint_errors_are_helpful(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Sim2PiError, match="no checkpoint"):
        load_policy(tmp_path)
    (tmp_path / "checkpoint.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(Sim2PiError, match="not a sim2pi checkpoint"):
        load_policy(tmp_path)


# ----------------------------------------------------------------------------------------------
# export


def _trained(spec, episodes, cfg: PolicyConfig, steps: int = 60) -> Policy:  # type: ignore[no-untyped-def]
    """A policy with data statistics and some training (so the heads are not at init)."""
    from agent.gcbc import Trainer
    from agent.relabel import RelabelConfig

    torch.manual_seed(0)
    store = EpisodeStore(spec, episodes)
    p = Policy(spec, cfg)
    p.set_stats(compute_stats(spec, store, cfg))
    tr = Trainer(
        p,
        store,
        RelabelConfig("future" if spec.goal_keys else "none"),
        lr=1e-3,
        weight_decay=0.0,
        grad_clip=10.0,
        batch_size=32,
        total_steps=steps,
        seed=0,
    )
    for _ in range(steps):
        tr.train_step()
    return p.eval()


@pytest.mark.parametrize("head", ["mse", "gmm", "discrete", "tanh_gaussian"])
@pytest.mark.parametrize("arch,history", [("mlp", 1), ("mlp", 3), ("gru", 3)])
def test_export_parity_and_checker_on_1000_dataset_observations(
    reach_spec, reach_demos, tmp_path, head, arch, history
) -> None:  # type: ignore[no-untyped-def]
    import onnx

    from deploy.bundle import Bundle

    cfg = PolicyConfig(arch=arch, head=head, history=history, hidden=(64, 64), egocentric=True)
    policy = _trained(reach_spec, reach_demos, cfg)
    inputs = dataset_windows(policy, reach_demos, n=1000)
    summary = export_bundle(policy, tmp_path / "bundle", parity_inputs=inputs)
    assert summary["parity_samples"] == 1000
    assert summary["parity_max_abs_diff"] <= 1e-5
    model = onnx.load(str(tmp_path / "bundle" / "policy.onnx"))
    onnx.checker.check_model(model, full_check=True)
    names = [i.name for i in model.graph.input]
    assert names == list(reach_spec.observation) and [o.name for o in model.graph.output] == [
        "action"
    ]
    b = Bundle.load(tmp_path / "bundle")
    assert b.history == history and b.spec == reach_spec and b.policy["head"] == head


def test_image_policy_export_parity(seek_spec, seek_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for arch in ("mlp", "gru"):
        cfg = PolicyConfig(arch=arch, head="discrete", history=2, hidden=(64,), image_embed=32)
        policy = _trained(seek_spec, seek_demos, cfg, steps=20)
        inputs = dataset_windows(policy, seek_demos, n=1000)
        assert inputs["image"].dtype == np.uint8 and inputs["image"].shape[1:] == (2, 64, 64, 3)
        summary = export_bundle(policy, tmp_path / arch, parity_inputs=inputs)
        assert summary["parity_max_abs_diff"] <= 1e-5


def test_runtime_runner_matches_torch(reach_spec, reach_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """deploy.policy.OnnxPolicy (the Pi's runner) fills the history like agent.rollout."""
    from agent.rollout import HistoryBuffer
    from deploy.policy import OnnxPolicy

    cfg = PolicyConfig(head="gmm", history=3, hidden=(32, 32))
    policy = _trained(reach_spec, reach_demos, cfg, steps=10)
    export_bundle(policy, tmp_path / "b")
    runner = OnnxPolicy(tmp_path / "b")
    runner.reset()
    buf = HistoryBuffer(reach_spec, 3)
    ep = reach_demos[0]
    for t in range(10):
        obs = {k: ep[k][t] for k in reach_spec.observation}
        buf.reset(obs) if t == 0 else buf.push(obs)
        ours = policy.act(buf.window())[0]
        theirs = runner.act(obs)
        np.testing.assert_allclose(np.asarray(theirs).reshape(-1), ours, atol=1e-5)


def test_parity_detects_a_different_graph(reach_spec, reach_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The parity check can fail: compare against a policy with other weights."""
    cfg = PolicyConfig(hidden=(32,))
    a = _trained(reach_spec, reach_demos, cfg, steps=5)
    export_bundle(a, tmp_path / "a")
    b = _trained(reach_spec, reach_demos, cfg, steps=30)
    inputs = dataset_windows(a, reach_demos, n=200)
    assert parity(b, tmp_path / "a" / "policy.onnx", inputs) > 1e-4


def test_save_checkpoint_of_a_sac_actor(reach_spec, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The SAC+HER actor (tanh_gaussian head) saves and loads like any policy."""
    actor = Policy(reach_spec, PolicyConfig(head="tanh_gaussian", hidden=(32, 32)))
    save_checkpoint(tmp_path, actor, algo="sac_her", step=7, train_config={"k": 4})
    p, meta = load_policy(tmp_path)
    assert meta.algo == "sac_her" and meta.train == {"k": 4}
    obs = {k: torch.randn(3, 1, *f.shape) for k, f in reach_spec.observation.items()}
    torch.testing.assert_close(p(obs), actor.eval()(obs))
    a, logp = actor.sample(obs)
    assert a.shape == (3, 2) and logp.shape == (3,) and torch.all(a.abs() <= 1)
