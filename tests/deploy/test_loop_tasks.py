"""Task-level behaviour of the one loop on the twin: pushing a box must not trip the obstacle stop,
while every other task keeps it."""

from __future__ import annotations

import pytest

from deploy.loop import ControlLoop, goal_judge
from deploy.teleop import ExpertSource
from hardware.description import load_description
from hardware.tasks import Observer

pytest.importorskip("pybullet")


def _loop(task: str, seed: int = 5) -> tuple[ControlLoop, object]:
    from sim.backend import TwinBackend

    desc = load_description("rover")
    tw = TwinBackend(task, desc, seed=seed)
    src = ExpertSource(task, desc, noise=0.0, seed=0)
    loop = ControlLoop(
        tw.robot,
        Observer(task, desc),
        src,
        paced=False,
        ground_truth=tw.ground_truth,
        judge=goal_judge(task),
    )
    return loop, tw


def test_obstacle_rule_is_off_only_for_contact_tasks() -> None:
    for task, expect_on in (("reach", True), ("push", False)):
        loop, tw = _loop(task)
        try:
            assert (loop.safety.config.obstacle_stop > 0) is expect_on, task
            # the rest of the safety configuration is the description's
            assert loop.safety.config.deadman == tw.robot.description.safety.deadman
        finally:
            loop.close()
            tw.close()


def test_push_expert_succeeds_through_the_loop() -> None:
    loop, tw = _loop("push")
    wins, obstacle_stops = 0, 0
    try:
        loop.start()
        for s in range(6):
            ep = tw.new_episode(seed=100 + s)
            res = loop.run_episode(
                goal=ep["goal"], max_steps=ep["max_steps"], box_guess=ep.get("box_guess")
            )
            wins += bool(res.success)
            obstacle_stops += res.info["safety"].get("obstacle", 0)
    finally:
        loop.close()
        tw.close()
    assert obstacle_stops == 0
    assert wins >= 5, f"push expert through the loop: {wins}/6"
