"""Fixtures for the sim tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from hardware.description import RobotDescription, load_description
from sim.twin import SimRobot


@pytest.fixture(scope="session")
def desc() -> RobotDescription:
    return load_description("rover")


@pytest.fixture
def short_sonar(desc: RobotDescription) -> RobotDescription:
    """The rover with a 0.5 m ultrasonic range (so open space reads as 'no echo')."""
    us = dataclasses.replace(desc.ultrasonic, max_distance=0.5, noise_std=0.0)
    return dataclasses.replace(desc, ultrasonic=us)


@pytest.fixture
def robot(desc: RobotDescription) -> Iterator[SimRobot]:
    r = SimRobot(desc, seed=0)
    r.connect()
    yield r
    r.disconnect()
