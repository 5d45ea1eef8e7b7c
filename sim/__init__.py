"""The PyBullet twin of a described rover, its gymnasium tasks and scripted experts.

Importing ``sim`` registers ``sim2pi/RoverReach-v0``, ``sim2pi/RoverPush-v0`` and
``sim2pi/RoverSeek-v0`` with gymnasium (PyBullet itself is imported only when a twin connects).
"""

from __future__ import annotations

from hardware.tasks import TASKS


def _register() -> None:
    try:
        import gymnasium
    except ModuleNotFoundError:  # a `pi`-only install: the twin is unavailable anyway
        return
    for name, info in TASKS.items():
        if info.env_id not in gymnasium.registry:
            gymnasium.register(
                id=info.env_id, entry_point=f"sim.envs:{_CLASSES[name]}", disable_env_checker=False
            )


_CLASSES = {"reach": "RoverReachEnv", "push": "RoverPushEnv", "seek": "RoverSeekEnv"}
_register()

__all__: list[str] = []
