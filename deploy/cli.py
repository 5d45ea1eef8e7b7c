"""The ``sim2pi`` command line.

Only typer/rich and the light ``hardware`` modules are imported here; every command imports what it
needs (torch, pybullet, onnxruntime, ...) inside its body, so ``sim2pi --help`` works on a ``pi``-only
install without torch or pybullet. Each area registers its own commands:

- ``deploy.dataset_cli``: ``record``, ``dataset info|validate|repair|compact|plot``
- ``deploy.runtime_cli``: ``deploy check|run``
- ``deploy.web.cli``: ``teleop``
- ``sim.cli``: ``sim expert|view``
- ``agent.cli``: ``train gcbc|dagger|her``, ``eval``, ``export``
- ``agent.demo``: ``demo``
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="sim2pi",
    help="Train small-robot policies in PyBullet, export them to ONNX and run them on a Raspberry Pi.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

_REGISTRARS = (
    "sim.cli",
    "deploy.dataset_cli",
    "deploy.runtime_cli",
    "deploy.web.cli",
    "agent.cli",
    "agent.demo",
)


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def describe(
    robot: str = typer.Argument("rover", help="Robot description: a YAML path or a shipped name."),
    fields: bool = typer.Option(False, "--fields", help="List every field with unit, range, doc."),
) -> None:
    """Validate a robot description and print its summary and hash."""
    from hardware.description import field_docs, load_description

    if fields:
        t = Table("field", "unit", "allowed", "meaning", title="robot description fields")
        for row in field_docs():
            t.add_row(*row)
        console.print(t)
        return
    desc = load_description(robot)
    g, m = desc.geometry, desc.motors
    console.print(f"[bold]{desc.name}[/] from {desc.source}  hash [cyan]{desc.hash}[/]")
    console.print(
        f"  wheels r={g.wheel_radius} m, track {g.track_width} m, mass {g.mass} kg; "
        f"{m.driver} driver, max {m.max_wheel_speed} rad/s "
        f"({m.max_wheel_speed * g.wheel_radius:.2f} m/s)"
    )
    console.print(
        f"  ultrasonic {'on' if desc.ultrasonic.enabled else 'off'}, encoders "
        f"{'on' if desc.encoders.enabled else 'off'}, camera "
        f"{desc.camera.kind + f' {desc.camera.width}x{desc.camera.height}' if desc.camera.enabled else 'off'}"
        f", control {desc.control.rate} Hz"
    )


# Packages a `pi`-only install does not have; an area that needs them at import time (``sim``
# registers gymnasium envs on import) is left out of the CLI there instead of breaking it.
_OPTIONAL = {"torch", "pybullet", "pybullet_utils", "gymnasium", "tensorboard", "safetensors"}


def _register_all() -> None:
    for mod in _REGISTRARS:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            top = (e.name or "").split(".")[0]
            if e.name and (e.name == mod or mod.startswith(e.name + ".") or top in _OPTIONAL):
                logging.getLogger(__name__).debug("CLI area %s unavailable: %s", mod, e)
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    from hardware.errors import Sim2PiError

    try:
        app()
    except Sim2PiError as e:
        Console(stderr=True).print(f"[red]error:[/] {e}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()


__all__ = ["app", "main", "Path"]
