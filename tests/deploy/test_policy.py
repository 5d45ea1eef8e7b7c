"""Bundle loading / validation and the ONNX runner (history window, spec checks, options)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import make_constant_bundle

from deploy.bundle import Bundle, write_bundle_json
from deploy.policy import OnnxPolicy, PolicySource, session_options
from hardware.description import from_dict
from hardware.errors import BundleError, SpecMismatch
from hardware.tasks import task_spec


def reach_obs(x: float = 0.0, goal: tuple[float, float] = (0.5, 0.0)) -> dict[str, np.ndarray]:
    return {
        "observation": np.array([x, 0, 1, 0, 0, 0], np.float32),
        "achieved_goal": np.array([x, 0], np.float32),
        "desired_goal": np.array(goal, np.float32),
    }


def window_bundle(path: Path, desc, history: int) -> Path:
    """Outputs (x of the oldest, x of the newest observation in the window)."""
    from onnx import TensorProto, helper, numpy_helper, save

    spec = task_spec("reach", desc)
    c = numpy_helper.from_array
    n = helper.make_node
    inputs = [
        helper.make_tensor_value_info(k, TensorProto.FLOAT, ["batch", history, *f.shape])
        for k, f in spec.observation.items()
    ]
    nodes = [
        n("Gather", ["observation", "first"], ["o0"], axis=1),
        n("Gather", ["observation", "last"], ["o1"], axis=1),
        n("Slice", ["o0", "i0", "i1", "i1"], ["x0"]),
        n("Slice", ["o1", "i0", "i1", "i1"], ["x1"]),
        n("Concat", ["x0", "x1"], ["action"], axis=1),
    ]
    inits = [
        c(np.array(0, np.int64), "first"),
        c(np.array(-1, np.int64), "last"),
        c(np.array([0], np.int64), "i0"),
        c(np.array([1], np.int64), "i1"),
    ]
    graph = helper.make_graph(
        nodes,
        "window",
        inputs,
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.mkdir(parents=True)
    save(model, str(path / "policy.onnx"))
    write_bundle_json(path, spec, history)
    return path


def test_history_window_is_filled_with_the_first_observation_and_rolls(tmp_path, desc) -> None:
    policy = OnnxPolicy(window_bundle(tmp_path / "w", desc, history=3))
    policy.reset()
    got = np.array([policy.act(reach_obs(x)) for x in (0.1, 0.2, 0.3, 0.4)])
    np.testing.assert_allclose(got, [[0.1, 0.1], [0.1, 0.2], [0.1, 0.3], [0.2, 0.4]], rtol=1e-6)
    policy.reset()
    assert policy.act(reach_obs(0.5)).tolist() == pytest.approx([0.5, 0.5])


def test_reach_controller_turns_toward_the_goal(reach_bundle) -> None:
    policy = OnnxPolicy(reach_bundle)
    ahead = policy.act(reach_obs(0.0, (0.3, 0.0)))
    assert ahead[0] == pytest.approx(ahead[1]) and ahead[0] > 0
    policy.reset()
    left = policy.act(reach_obs(0.0, (0.0, 0.3)))
    assert left[1] > left[0]  # goal on the left: the right wheel drives faster


def test_session_options_for_a_small_shared_cpu() -> None:
    import onnxruntime as ort

    so = session_options()
    assert so.intra_op_num_threads == 1
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(2).intra_op_num_threads == 2


def test_observation_mismatch_names_the_feature(reach_bundle) -> None:
    policy = OnnxPolicy(reach_bundle)
    bad = reach_obs()
    bad["desired_goal"] = np.zeros(3, np.float32)
    with pytest.raises(SpecMismatch, match="desired_goal"):
        policy.act(bad)
    missing = reach_obs()
    del missing["achieved_goal"]
    with pytest.raises(SpecMismatch, match="achieved_goal"):
        policy.act(missing)


def test_graph_that_disagrees_with_bundle_json_is_refused(tmp_path, desc) -> None:
    path = window_bundle(tmp_path / "w", desc, history=3)
    write_bundle_json(path, task_spec("reach", desc), 2)  # claims history 2, graph has 3
    with pytest.raises(SpecMismatch, match=r"observation.*shape"):
        OnnxPolicy(path)


def test_policy_source_stamps_commands(reach_bundle) -> None:
    src = PolicySource(OnnxPolicy(reach_bundle))

    class Ctx:
        obs = reach_obs()
        now = 12.5

    cmd = src.command(Ctx())
    assert cmd.stamp == 12.5 and cmd.source == "policy" and cmd.action.shape == (2,)
    assert src.events() == []


# ------------------------------------------------------------------------------ bundle.json


def test_bundle_round_trip_and_robot_check(reach_bundle, desc) -> None:
    b = Bundle.load(reach_bundle)
    assert b.history == 2 and b.task == "reach" and b.control_rate == desc.control.rate
    assert b.spec == task_spec("reach", desc)
    b.check_robot(desc)
    assert Bundle.load(reach_bundle / "bundle.json").path == reach_bundle


def test_bundle_for_another_robot_is_refused_naming_it(reach_bundle, desc) -> None:
    other = from_dict(
        {
            **desc.to_dict(),
            "name": "bigrover",
            "geometry": {**dataclasses.asdict(desc.geometry), "wheel_radius": 0.05},
        }
    )
    with pytest.raises(BundleError, match=r"made for robot 'rover'.*not for robot 'bigrover'") as e:
        Bundle.load(reach_bundle).check_robot(other)
    assert desc.hash in str(e.value) and other.hash in str(e.value)


def test_bundle_for_another_task_names_the_feature(tmp_path, desc) -> None:
    b = Bundle.load(make_constant_bundle(tmp_path / "p", desc, (0.0, 0.0), task="push"))
    b.task = "reach"  # as if bundle.json said reach but the spec is push's
    with pytest.raises(SpecMismatch, match="feature 'observation'"):
        b.check_robot(desc)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m.update(format="something"), "not a sim2pi policy bundle"),
        (lambda m: m.update(version=99), "version 99 is not supported"),
        (lambda m: m.pop("history"), "missing 'history'"),
        (lambda m: m.update(history=0), "'history' must be an integer >= 1"),
        (lambda m: m.update(control_rate=-5), "'control_rate' must be a positive"),
        (lambda m: m.update(robot_hash="0123456789abcdef"), "disagrees with the spec"),
        (lambda m: m["spec"].pop("observation"), "'spec' is malformed"),
    ],
)
def test_malformed_bundle_json_is_refused(tmp_path, reach_bundle, edit, match) -> None:
    import shutil

    p = tmp_path / "b"
    shutil.copytree(reach_bundle, p)
    meta = json.loads((p / "bundle.json").read_text())
    edit(meta)
    (p / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=match):
        Bundle.load(p)


def test_missing_files_are_refused(tmp_path, reach_bundle) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        Bundle.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=r"no policy\.onnx"):
        Bundle.load(tmp_path / "empty")
    (tmp_path / "empty" / "policy.onnx").write_bytes(b"garbage")
    (tmp_path / "empty" / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.load(tmp_path / "empty")
    (tmp_path / "empty" / "bundle.json").write_text((reach_bundle / "bundle.json").read_text())
    with pytest.raises(BundleError, match="onnxruntime cannot load"):
        OnnxPolicy(tmp_path / "empty")


def test_write_bundle_json_refuses_what_the_runtime_would_refuse(tmp_path, desc) -> None:
    with pytest.raises(BundleError, match="history"):
        write_bundle_json(tmp_path, task_spec("reach", desc), 0)
    assert not (tmp_path / "bundle.json").exists()
