"""The ``--backend mock`` robot: a real :class:`~hardware.pi.PiRobot` on gpiozero's mock pins.

Everything above the pins is the production code path (gpiozero ``Motor``/``Robot``, the HC-SR04
reader, ``RotaryEncoder``, ``Button``); only the world is simulated:

- motors: ``MockFactory(pin_class=MockPWMPin)``, so the PWM duty of every motor pin can be asserted;
- ultrasonic: the trigger pin is a gpiozero ``MockTriggerPin`` that answers each ping with an echo
  pulse as long as the set distance takes (or never, for "no echo": :meth:`MockRobot.set_echo_distance`);
- encoders: a small motor model (deadband, max wheel speed, first-order lag: the same one as the
  sim twin) reads the duty back from the motor pins, integrates wheel angles on the robot's clock
  and drives the encoder pins through the matching quadrature edges. It advances on every
  ``get_observation``/``send_action``/``stop`` call, so a test with an injected clock is
  deterministic and needs no background thread;
- e-stop: :meth:`MockRobot.press_estop` / :meth:`MockRobot.release_estop` drive the button pin;
- camera: a :class:`~hardware.camera.ReplayCamera` of synthetic frames (``freeze_camera`` stops it).

Used by ``sim2pi deploy run --backend mock`` and by the runtime's fault-injection tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from time import sleep
from typing import Any

import numpy as np

from hardware.camera import Camera, ReplayCamera, synthetic_frames
from hardware.description import RobotDescription
from hardware.errors import DeviceError
from hardware.pi import SPEED_OF_SOUND, PiRobot, wheel_speed_for_duty

Clock = Callable[[], float]

#: Longest state log kept on an encoder pin (gpiozero's MockPin appends one entry per edge).
_MAX_PIN_HISTORY = 10_000


def _sonar_pin_class() -> type:
    """A gpiozero ``MockTriggerPin`` whose echo length follows a settable distance.

    It also derives from ``MockPWMPin`` only so that ``MockFactory(pin_class=MockPWMPin)`` accepts
    it for the trigger pin (the factory refuses to mix PWM and non-PWM mock pins on one pin).
    """
    from gpiozero.pins.mock import MockPWMPin, MockTriggerPin

    class SonarTriggerPin(MockTriggerPin, MockPWMPin):
        """Echoes a pulse of ``2 * distance / c`` seconds; ``distance=None`` never echoes."""

        def __init__(
            self, factory: Any, info: Any, echo_pin: Any = None, distance: float | None = 1.0
        ):
            MockTriggerPin.__init__(self, factory, info, echo_pin=echo_pin)
            self._frequency = None
            self.distance = distance

        def _echo(self) -> None:
            d = self.distance
            if d is None or self.echo_pin is None:
                return
            sleep(0.0002)
            self.echo_pin.drive_high()
            sleep(2.0 * d / SPEED_OF_SOUND)
            self.echo_pin.drive_low()

    return SonarTriggerPin


def _quadrature_step(lead: Any, lag: Any) -> None:
    """One full quadrature cycle on pulled-up (active-low) encoder pins, ``lead`` first."""
    lead.drive_low()
    lag.drive_low()
    lead.drive_high()
    lag.drive_high()


def _free_pin(desc: RobotDescription) -> int:
    """A BCM pin the description does not use (for a mock e-stop button)."""
    used = set()
    m = desc.motors
    for pins in (m.left, m.right):
        used |= {p for p in (pins.forward, pins.backward, pins.enable, pins.phase) if p is not None}
    if desc.ultrasonic.enabled:
        used |= {desc.ultrasonic.trigger, desc.ultrasonic.echo}
    if desc.encoders.enabled:
        e = desc.encoders
        used |= {e.left_a, e.left_b, e.right_a, e.right_b}
    used |= {s.pin for s in desc.sensors}
    for pin in range(27, 1, -1):
        if pin not in used:
            return pin
    raise DeviceError("no free BCM pin left for the mock e-stop button")


class MockRobot(PiRobot):
    """A :class:`PiRobot` on mock pins with a simulated world. Build it with
    :func:`make_mock_robot`; the extra handles are for tests and fault injection."""

    def __init__(
        self,
        desc: RobotDescription,
        *,
        factory: Any,
        camera: Camera | None,
        clock: Clock,
        estop_pin: int,
    ):
        super().__init__(desc, pin_factory=factory, camera=camera, clock=clock, estop_pin=estop_pin)
        self.factory = factory
        self.estop_pin_number = estop_pin
        self.true_wheel_angle = np.zeros(2)
        self.true_wheel_speed = np.zeros(2)
        self._emitted = [0, 0]
        self._t_model = 0.0
        # Pin handles and model constants, looked up once at connect (``factory.pin`` walks the
        # whole board description on every call: too slow for every tick).
        self._duty_pins: tuple[tuple[Any, Any, Any, float], ...] = ()
        self._encoder_pins: tuple[tuple[Any, Any], ...] = ()

    # -- handles -----------------------------------------------------------------------------

    @property
    def motor_pins(self) -> dict[str, dict[str, Any]]:
        """``{"left"|"right": {pin role: MockPWMPin}}``; roles forward/backward(/enable) for
        ``motor`` drivers, phase/enable for ``phase_enable``."""
        m = self.description.motors
        roles = (
            ("phase", "enable") if m.driver == "phase_enable" else ("forward", "backward", "enable")
        )
        out: dict[str, dict[str, Any]] = {}
        for side in ("left", "right"):
            pins = getattr(m, side)
            out[side] = {
                r: self.factory.pin(getattr(pins, r)) for r in roles if getattr(pins, r) is not None
            }
        return out

    @property
    def trigger_pin(self) -> Any:
        return self.factory.pin(self.description.ultrasonic.trigger)

    def set_echo_distance(self, distance: float | None) -> None:
        """Distance (m) the simulated HC-SR04 sees from the next ping on; ``None`` = no echo.

        The echo pulse is timed with real sleeps, so a reading can come out long (never short) by
        thread-scheduling delay: about 17 cm per millisecond on a busy machine.
        """
        if not self.description.ultrasonic.enabled:
            raise DeviceError("this description has no ultrasonic sensor (ultrasonic.enabled)")
        if distance is not None and not (math.isfinite(distance) and distance >= 0):
            raise ValueError(
                f"echo distance must be a finite number >= 0 or None, got {distance!r}"
            )
        self.trigger_pin.distance = distance

    def freeze_range(self, frozen: bool = True) -> None:
        """Stop (or restart) the ranging thread: readings then age (stale-sensor injection)."""
        if self.ranger is None:
            raise DeviceError("no ultrasonic ranger (not connected, or not fitted)")
        if frozen:
            self.ranger.stop()
        else:
            self.ranger.start()

    def freeze_camera(self, frozen: bool = True) -> None:
        """Stop (or resume) new camera frames (needs a ReplayCamera)."""
        if not isinstance(self.camera, ReplayCamera):
            raise DeviceError("freeze_camera needs a connected ReplayCamera")
        self.camera.freeze(frozen)

    def press_estop(self) -> None:
        """Press the e-stop button (drives its pin low)."""
        self.factory.pin(self.estop_pin_number).drive_low()

    def release_estop(self) -> None:
        """Release the e-stop button (drives its pin high)."""
        self.factory.pin(self.estop_pin_number).drive_high()

    # -- the simulated world -----------------------------------------------------------------

    def _cache_pins(self) -> None:
        """Look up the motor and encoder pin handles once (they live as long as the factory)."""
        m = self.description.motors
        phase = m.driver == "phase_enable"
        duty = []
        for side, inverted in (("left", m.invert_left), ("right", m.invert_right)):
            pins = getattr(m, side)
            sign = -1.0 if inverted else 1.0
            en = None if pins.enable is None else self.factory.pin(pins.enable)
            if phase:
                duty.append((None, self.factory.pin(pins.phase), en, sign))
            else:
                duty.append(
                    (self.factory.pin(pins.forward), self.factory.pin(pins.backward), en, sign)
                )
        self._duty_pins = tuple(duty)
        if self.description.encoders.enabled:
            e = self.description.encoders
            self._encoder_pins = tuple(
                (self.factory.pin(a), self.factory.pin(b))
                for a, b in ((e.left_a, e.left_b), (e.right_a, e.right_b))
            )
        else:
            self._encoder_pins = ()

    def _physical_duty(self) -> tuple[float, float]:
        """Signed duty each wheel really gets, read back from the motor pins and the wiring."""
        if not self._duty_pins:
            self._cache_pins()
        out = []
        for fwd, back, en, sign in self._duty_pins:
            if fwd is None:  # phase_enable: ``back`` is the phase pin
                v = float(en.state) * (-1.0 if back.state else 1.0)
            else:
                v = float(fwd.state) - float(back.state)
                if en is not None and not en.state:
                    v = 0.0
            out.append(sign * v)
        return out[0], out[1]

    def advance_world(self) -> None:
        """Integrate the wheel model to the robot's clock and emit the encoder edges."""
        if not self.is_connected:
            return
        now = self.clock()
        dt = now - self._t_model
        if dt <= 0:
            return
        self._t_model = now
        m = self.description.motors
        tau = m.time_constant
        k = math.exp(-dt / tau) if tau > 1e-6 else 0.0
        angle, speed = self.true_wheel_angle, self.true_wheel_speed
        duty = self._physical_duty()
        for i in range(2):
            target = wheel_speed_for_duty(duty[i], m)
            if tau > 1e-6:
                w0 = float(speed[i])
                # exact integral of a first-order lag over dt
                angle[i] = float(angle[i]) + target * dt + (w0 - target) * tau * (1 - k)
                speed[i] = target + (w0 - target) * k
            else:
                angle[i] = float(angle[i]) + target * dt
                speed[i] = target
        if self._encoder_pins:
            tpr = self.description.encoders.ticks_per_rev
            for i, (a, b) in enumerate(self._encoder_pins):
                want = math.floor(float(angle[i]) / (2 * math.pi) * tpr)
                emitted = self._emitted[i]
                while emitted < want:
                    _quadrature_step(a, b)  # A leads: gpiozero's RotaryEncoder counts +1
                    emitted += 1
                while emitted > want:
                    _quadrature_step(b, a)  # B leads: -1
                    emitted -= 1
                self._emitted[i] = emitted
                if len(a.states) > _MAX_PIN_HISTORY:
                    # MockPin logs every edge; an encoder emits thousands a second: keep the
                    # log bounded on long runs (nothing reads the encoder pins' history)
                    a.clear_states()
                    b.clear_states()

    def connect(self) -> None:
        if self.is_connected:
            return
        super().connect()
        self._cache_pins()
        self._t_model = self.clock()
        self.true_wheel_angle = np.zeros(2)
        self.true_wheel_speed = np.zeros(2)
        self._emitted = [0, 0]

    def get_observation(self) -> dict[str, np.ndarray]:
        self.advance_world()
        return super().get_observation()

    def send_action(self, action: Any) -> np.ndarray:
        self.advance_world()
        return super().send_action(action)

    def stop(self) -> None:
        self.advance_world()
        super().stop()


def make_mock_robot(
    desc: RobotDescription,
    *,
    camera: Camera | None = None,
    clock: Clock = time.monotonic,
    echo_distance: float | None = 1.0,
    estop_pin: int | None = None,
) -> MockRobot:
    """A :class:`MockRobot` for ``desc`` on a fresh ``MockFactory(pin_class=MockPWMPin)``.

    Args:
        desc: the robot description (its hash is unchanged: the mock is configured, not edited).
        camera: camera to use; default: a ReplayCamera of synthetic frames at the described size.
        clock: time source for the robot, the world model and the replay camera.
        echo_distance: initial distance the HC-SR04 sees (m), ``None`` for no echo.
        estop_pin: pin of the simulated e-stop button; default ``desc.safety.estop_pin``, or a
            free pin if the description has none (so fault injection always has a button).
    """
    from hardware.pins import make_pin_factory

    factory = make_pin_factory("mock")
    if desc.ultrasonic.enabled:
        echo = factory.pin(desc.ultrasonic.echo)
        factory.pin(
            desc.ultrasonic.trigger,
            pin_class=_sonar_pin_class(),
            echo_pin=echo,
            distance=echo_distance,
        )
    if camera is None and desc.camera.enabled:
        c = desc.camera
        camera = ReplayCamera(
            synthetic_frames(c.width, c.height), c.width, c.height, c.fps, clock=clock
        )
    pin = estop_pin if estop_pin is not None else desc.safety.estop_pin
    if pin is None:
        pin = _free_pin(desc)
    return MockRobot(desc, factory=factory, camera=camera, clock=clock, estop_pin=pin)
