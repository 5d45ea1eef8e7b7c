"""Fixtures for the agent tests: single-threaded torch, the rover specs, cached expert demos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hardware.description import load_description
from hardware.spec import Spec
from hardware.tasks import task_spec

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def desc():  # type: ignore[no-untyped-def]
    return load_description("rover")


@pytest.fixture(scope="session")
def reach_spec(desc) -> Spec:  # type: ignore[no-untyped-def]
    return task_spec("reach", desc)


@pytest.fixture(scope="session")
def seek_spec(desc) -> Spec:  # type: ignore[no-untyped-def]
    return task_spec("seek", desc)


@pytest.fixture(scope="session")
def reach_demos() -> list[dict[str, np.ndarray]]:
    """30 scripted-expert reach demos (env seeds 0..29)."""
    from agent.rollout import collect_episodes

    eps, _ = collect_episodes("reach", 30)
    return eps


@pytest.fixture(scope="session")
def seek_demos() -> list[dict[str, np.ndarray]]:
    """A few seek demos (images) for export parity."""
    from agent.rollout import collect_episodes

    eps, _ = collect_episodes("seek", 8)
    return eps
