"""hardware/ and deploy/ must import without torch and pybullet (the `pi` install has neither)."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BLOCKER = r"""
import importlib, importlib.abc, pkgutil, sys
BLOCKED = ("torch", "pybullet", "pybullet_utils", "gymnasium", "tensorboard", "safetensors")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked import of {name}", name=name)
        return None
sys.meta_path.insert(0, Block())
failed = []
for pkg in ("hardware", "deploy"):
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        try:
            importlib.import_module(info.name)
        except ImportError as e:
            failed.append(f"{info.name}: {e}")
import deploy.cli  # the CLI builds (all commands registered) without torch/pybullet
for name in BLOCKED:
    assert name not in sys.modules, name
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_hardware_and_deploy_import_without_torch_and_pybullet() -> None:
    r = subprocess.run(
        [sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_help_without_torch_and_pybullet() -> None:
    code = BLOCKER.split("failed = []")[0] + (
        "import sys\nsys.argv=['sim2pi','--help']\nfrom deploy.cli import app\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "for n in BLOCKED:\n    assert n not in sys.modules, n\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # every area that must work on the robot is listed (sim commands need pybullet: absent there)
    for command in ("describe", "record", "dataset", "deploy", "teleop", "train", "eval", "export"):
        listed = re.search(rf"^\W*{command}\s", r.stdout, re.MULTILINE)
        assert listed, f"'{command}' missing from `sim2pi --help` on a pi install:\n{r.stdout}"


def test_every_package_module_is_seen() -> None:
    # guard against the walk above silently seeing nothing
    names = [m.name for m in pkgutil.walk_packages([str(ROOT / "hardware")], "hardware.")]
    assert "hardware.spec" in names and "hardware.description" in names
