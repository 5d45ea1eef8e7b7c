"""Raspberry Pi drivers on gpiozero, and :class:`PiRobot`, the real robot behind ``Robot``.

Every driver composes gpiozero devices (no deep subclassing), takes a keyword-only
``pin_factory=None`` and passes it down. gpiozero is imported inside constructors only, so this
module imports without it and without touching GPIO.

Designed around gpiozero 2.0.1's known traps:

- ``DistanceSensor.distance`` blocks forever without an echo and keeps a stale value after a
  failure: :class:`HCSR04` times the echo pulse itself from pin edges, waits at most
  ``ultrasonic.timeout`` per ping on its own thread, timestamps every reading and reports
  "no echo" (``valid=False``) separately from a distance.
- ``RotaryEncoder`` saturates at ±16 steps by default: :class:`WheelEncoders` uses ``max_steps=0``.
- ``PhaseEnableRobot`` is broken in 2.0.1.post3: :class:`DriveTrain` composes
  ``Robot(left=PhaseEnableMotor(...), right=PhaseEnableMotor(...))``.
- Setting ``Motor.value`` to NaN raises but leaves the motor running: every command goes through
  :func:`hardware.robot.sanitize_action` first (non-finite → stop).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from hardware.camera import Camera, make_camera
from hardware.description import DigitalSensor, Motors, RobotDescription
from hardware.errors import DeviceError, StaleData
from hardware.odometry import DiffDriveOdometry, ticks_to_radians
from hardware.robot import Robot, robot_observation_features, sanitize_action
from hardware.spec import Feature

if TYPE_CHECKING:
    from gpiozero.pins import Factory

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# Speed of sound in dry air at 20 °C, m/s (the value gpiozero's DistanceSensor uses too).
SPEED_OF_SOUND = 343.26


def _gpio_error(what: str, e: BaseException) -> DeviceError:
    return DeviceError(
        f"{what}: {type(e).__name__}: {e}. Check the BCM pin numbers in the robot "
        "description and that no other program (or another sim2pi) uses these pins."
    )


def _close_quietly(device: Any, name: str) -> None:
    if device is None:
        return
    try:
        device.close()
    except Exception as e:  # closing must go on for the other devices
        log.warning("closing %s failed: %s", name, e)


# --------------------------------------------------------------------------------------- motors


class DriveTrain:
    """The two drive motors as one gpiozero ``Robot``; ``(left, right)`` means ``Robot.value``.

    ``driver: motor`` builds ``Motor(forward, backward, enable=...)`` per wheel (an L298N/DRV8833
    H-bridge; gpiozero always switches the opposite pin off before driving one, so forward and
    backward are never driven together), ``driver: phase_enable`` builds
    ``PhaseEnableMotor(phase, enable)``. ``invert_left``/``invert_right`` flip the sign in software,
    so ``+1`` always means "this wheel drives the robot forward". PWM runs at
    ``motors.pwm_frequency``.

    Callers pass finite values in [-1, 1] (use :func:`hardware.robot.sanitize_action`).
    """

    def __init__(self, motors: Motors, *, pin_factory: Factory | None = None):
        from gpiozero import Motor, PhaseEnableMotor
        from gpiozero import Robot as GpioRobot

        self._signs = (-1.0 if motors.invert_left else 1.0, -1.0 if motors.invert_right else 1.0)
        built: list[Any] = []
        try:
            for pins in (motors.left, motors.right):
                if motors.driver == "phase_enable":
                    m = PhaseEnableMotor(pins.phase, pins.enable, pwm=True, pin_factory=pin_factory)
                    m.enable_device.frequency = motors.pwm_frequency
                else:
                    m = Motor(
                        pins.forward,
                        pins.backward,
                        enable=pins.enable,
                        pwm=True,
                        pin_factory=pin_factory,
                    )
                    m.forward_device.frequency = motors.pwm_frequency
                    m.backward_device.frequency = motors.pwm_frequency
                built.append(m)
            self._robot = GpioRobot(left=built[0], right=built[1], pin_factory=pin_factory)
        except BaseException:
            for m in built:
                _close_quietly(m, "motor")
            raise
        # The motors themselves, for drive(): ``Robot.value = (l, r)`` is exactly
        # ``left_motor.value, right_motor.value = l, r`` behind two composite-device lookups.
        self._left, self._right = built
        self._robot.stop()
        log.info(
            "drive: gpiozero Robot of two %s (PWM %d Hz, invert left=%s right=%s)",
            "PhaseEnableMotor" if motors.driver == "phase_enable" else "Motor",
            motors.pwm_frequency,
            motors.invert_left,
            motors.invert_right,
        )

    @property
    def robot(self) -> Any:
        """The underlying ``gpiozero.Robot``."""
        return self._robot

    @property
    def value(self) -> tuple[float, float]:
        """The logical ``(left, right)`` duty currently applied (after inversion)."""
        left, right = self._robot.value
        return (left * self._signs[0], right * self._signs[1])

    def drive(self, left: float, right: float) -> None:
        """Apply finite duties in [-1, 1]; on any gpiozero error both motors are stopped."""
        try:
            # each Motor switches its opposite H-bridge pin off before driving one (gpiozero's
            # forward()/backward()), so forward and backward are never driven together
            self._left.value = float(left) * self._signs[0]
            self._right.value = float(right) * self._signs[1]
        except Exception as e:
            self.stop()
            raise DeviceError(
                f"setting motor duty ({left}, {right}) failed and the motors were "
                f"stopped: {e}. Sanitize commands with "
                "hardware.robot.sanitize_action first."
            ) from e

    def stop(self) -> None:
        """Both motors off (each motor's stop(): all its pins low)."""
        self._robot.stop()

    def close(self) -> None:
        """Stop and release the motor pins (idempotent)."""
        try:
            if not self._robot.closed:
                self._robot.stop()
        finally:
            self._robot.close()


# ------------------------------------------------------------------------------------ ultrasonic


class RangeReading(NamedTuple):
    """One HC-SR04 ping: distance (m; ``max_distance`` when invalid), whether an echo came back
    from within ``max_distance``, and the clock time of the reading."""

    distance: float
    valid: bool
    timestamp: float


class HCSR04:
    """An HC-SR04 ultrasonic ranger that never blocks the control loop.

    A trigger ``DigitalOutputDevice`` fires a 10 µs pulse; the echo pin's edge callback records the
    rising and falling ``ticks`` and the pulse width gives the distance. Each ping waits at most
    ``timeout`` seconds; no complete pulse within it means "no echo" (``valid=False``), and so does
    a pulse longer than ``max_distance``. :meth:`start` runs pings on a background thread at
    ``rate``; :attr:`latest` is the newest :class:`RangeReading` with its timestamp, so a stalled
    sensor shows up as a growing age (the safety layer stops the robot on stale data).

    Args:
        trigger, echo: BCM pins (echo through a 5 V → 3.3 V divider!).
        timeout: longest wait for a complete echo pulse, s.
        rate: ping rate of the background thread, Hz.
        min_distance, max_distance: readings are clamped up to ``min_distance``; farther than
            ``max_distance`` reads as "no echo".
        clock: time source for reading timestamps (injectable for tests).
        pin_factory: gpiozero pin factory passed to both devices.
    """

    def __init__(
        self,
        trigger: int | str,
        echo: int | str,
        *,
        timeout: float = 0.03,
        rate: float = 20.0,
        min_distance: float = 0.02,
        max_distance: float = 2.0,
        clock: Clock = time.monotonic,
        pin_factory: Factory | None = None,
    ):
        from gpiozero import DigitalOutputDevice, InputDevice

        if timeout <= 0 or rate <= 0:
            raise ValueError(f"timeout and rate must be positive, got {timeout} s, {rate} Hz")
        self.timeout = float(timeout)
        self.rate = float(rate)
        self.min_distance = float(min_distance)
        self.max_distance = float(max_distance)
        self.clock = clock
        self._trigger = DigitalOutputDevice(trigger, initial_value=False, pin_factory=pin_factory)
        try:
            self._echo = InputDevice(echo, pull_up=False, pin_factory=pin_factory)
        except BaseException:
            self._trigger.close()
            raise
        self._factory = self._echo.pin_factory
        self._edge_lock = threading.Lock()
        self._ping_lock = threading.Lock()
        self._done = threading.Event()
        self._armed = False
        self._rise: Any = None
        self._fall: Any = None
        self._latest: RangeReading | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.pings = 0
        self.no_echo = 0
        pin = self._echo.pin
        pin.edges = "both"
        pin.bounce = None
        pin.when_changed = self._on_edge  # a bound method: gpiozero keeps only a weak reference

    @property
    def trigger_pin(self) -> Any:
        return self._trigger.pin

    @property
    def echo_pin(self) -> Any:
        return self._echo.pin

    @property
    def latest(self) -> RangeReading | None:
        """The newest reading, or ``None`` before the first ping."""
        return self._latest

    def age(self) -> float:
        """Seconds since the newest reading (``inf`` before the first)."""
        r = self._latest
        return math.inf if r is None else max(0.0, self.clock() - r.timestamp)

    def read(self, max_age: float) -> RangeReading:
        """The newest reading; raises StaleData if it is older than ``max_age`` seconds."""
        r = self._latest
        if r is None:
            raise StaleData("HC-SR04: no reading yet; call start() or measure() first")
        age = self.clock() - r.timestamp
        if age > max_age:
            raise StaleData(
                f"HC-SR04: newest reading is {age * 1000:.0f} ms old (allowed "
                f"{max_age * 1000:.0f} ms); is the ranging thread running?"
            )
        return r

    def _on_edge(self, ticks: Any, state: Any) -> None:
        with self._edge_lock:
            if not self._armed:
                return
            if state:
                self._rise = ticks
            elif self._rise is not None:
                self._fall = ticks
                self._done.set()

    def measure(self) -> RangeReading:
        """Fire one ping and wait at most ``timeout`` for its echo; store and return the reading."""
        with self._ping_lock:
            # An echo still high from the previous ping (or a sensor stuck high) must fall first.
            deadline = time.monotonic() + self.timeout
            while self._echo.pin.state and time.monotonic() < deadline:
                time.sleep(0.0005)
            with self._edge_lock:
                self._rise = self._fall = None
                self._done.clear()
                self._armed = not self._echo.pin.state
            if self._armed:
                self._trigger.on()
                time.sleep(10e-6)  # the HC-SR04 needs a >= 10 µs trigger pulse
                self._trigger.off()
                self._done.wait(self.timeout)
            with self._edge_lock:
                self._armed = False
                rise, fall = self._rise, self._fall
            self.pings += 1
            now = self.clock()
            if rise is None or fall is None:
                reading = RangeReading(self.max_distance, False, now)
            else:
                d = self._factory.ticks_diff(fall, rise) * SPEED_OF_SOUND / 2.0
                if d > self.max_distance:
                    reading = RangeReading(self.max_distance, False, now)
                else:
                    reading = RangeReading(max(d, self.min_distance), True, now)
            if not reading.valid:
                self.no_echo += 1
            self._latest = reading
            return reading

    def start(self) -> None:
        """Ping on a background thread at ``rate`` (no-op if already running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hcsr04", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (devices stay open; readings then age)."""
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None:
            t.join(timeout=self.timeout + 1.0 / self.rate + 1.0)
            if t.is_alive():
                log.warning("HC-SR04 thread did not stop in time")

    def _run(self) -> None:
        period = 1.0 / self.rate
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.measure()
            except Exception as e:
                if self._stop.is_set():
                    break
                log.warning("HC-SR04 ping failed: %s", e)
            self._stop.wait(max(0.0, period - (time.monotonic() - t0)))

    def close(self) -> None:
        """Stop the thread and release both pins (idempotent)."""
        self.stop()
        _close_quietly(self._trigger, "HC-SR04 trigger")
        _close_quietly(self._echo, "HC-SR04 echo")


# -------------------------------------------------------------------------------------- encoders


class WheelEncoders:
    """Two quadrature wheel encoders as gpiozero ``RotaryEncoder(a, b, max_steps=0)``.

    gpiozero counts one step per full quadrature cycle (four edges), so ``encoders.ticks_per_rev``
    is cycles per wheel revolution (the encoder's PPR times the gear ratio). Positive steps must
    mean "this wheel drives the robot forward"; if a wheel counts backwards, swap its A and B pins.
    ``max_steps=0`` because the default (16) saturates the count.
    """

    def __init__(
        self,
        left_a: int | str,
        left_b: int | str,
        right_a: int | str,
        right_b: int | str,
        *,
        pin_factory: Factory | None = None,
    ):
        from gpiozero import RotaryEncoder

        self.left = RotaryEncoder(left_a, left_b, max_steps=0, pin_factory=pin_factory)
        try:
            self.right = RotaryEncoder(right_a, right_b, max_steps=0, pin_factory=pin_factory)
        except BaseException:
            self.left.close()
            raise

    def steps(self) -> tuple[int, int]:
        """Cumulative (left, right) steps since construction."""
        return int(self.left.steps), int(self.right.steps)

    def close(self) -> None:
        _close_quietly(self.left, "left encoder")
        _close_quietly(self.right, "right encoder")


# --------------------------------------------------------------------------------- e-stop/sensors


class EStopButton:
    """A (latching, mushroom) e-stop button as a gpiozero ``Button``: pulled up, pressed = low.

    :attr:`pressed` is the live state; callbacks registered with :meth:`on_press` run on gpiozero's
    event thread at the press; :attr:`press_count` lets a polling loop notice a press shorter than
    its period. Latching until an explicit reset is the runtime safety layer's job.
    """

    def __init__(self, pin: int | str, *, pin_factory: Factory | None = None):
        from gpiozero import Button

        self.press_count = 0
        self._callbacks: list[Callable[[], None]] = []
        self._button = Button(pin, pull_up=True, bounce_time=None, pin_factory=pin_factory)
        self._button.when_pressed = self._on_press

    @property
    def pressed(self) -> bool:
        return bool(self._button.is_pressed)

    @property
    def pin(self) -> Any:
        return self._button.pin

    def on_press(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (no arguments) on every press."""
        self._callbacks.append(callback)

    def _on_press(self) -> None:
        self.press_count += 1
        log.warning("e-stop button pressed")
        for cb in list(self._callbacks):
            try:
                cb()
            except Exception:
                log.exception("e-stop callback %r failed", cb)

    def close(self) -> None:
        _close_quietly(self._button, "e-stop button")


class DigitalSensors:
    """Digital line/light sensor modules (``desc.sensors``) as ``DigitalInputDevice`` s.

    These modules (TCRT5000, LM393 light boards) have a comparator and drive a clean digital level,
    so a plain ``DigitalInputDevice`` with the described ``active_high`` fits; gpiozero's
    ``LineSensor`` adds a smoothing thread and ``LightSensor`` times an LDR/capacitor charge, which
    these modules do not need. ``values()`` is 1 when the module senses (line / light).
    """

    def __init__(self, sensors: Sequence[DigitalSensor], *, pin_factory: Factory | None = None):
        from gpiozero import DigitalInputDevice

        self._devices: dict[str, Any] = {}
        try:
            for s in sensors:
                self._devices[s.name] = DigitalInputDevice(
                    s.pin, pull_up=None, active_state=s.active_high, pin_factory=pin_factory
                )
        except BaseException:
            self.close()
            raise

    def values(self) -> dict[str, int]:
        return {name: int(dev.value) for name, dev in self._devices.items()}

    def close(self) -> None:
        for name, dev in self._devices.items():
            _close_quietly(dev, f"sensor {name}")


# --------------------------------------------------------------------------------------- PiRobot


def target_wheel_speed(duty: np.ndarray, motors: Motors) -> np.ndarray:
    """Steady-state wheel speed (rad/s) for a duty: zero inside the deadband, then linear up to
    ``max_wheel_speed`` (the same motor model as the sim twin)."""
    duty = np.asarray(duty, dtype=np.float64)
    db = motors.deadband
    mag = np.clip((np.abs(duty) - db) / (1.0 - db), 0.0, None)
    return np.sign(duty) * mag * motors.max_wheel_speed


def wheel_speed_for_duty(duty: float, motors: Motors) -> float:
    """:func:`target_wheel_speed` for one wheel, on plain floats (the same arithmetic, bit for
    bit; a per-tick helper: a 2-element numpy round trip costs more than the maths)."""
    db = motors.deadband
    mag = (abs(duty) - db) / (1.0 - db)
    if not mag > 0.0:
        return 0.0
    return math.copysign(mag * motors.max_wheel_speed, duty)


class PiRobot(Robot):
    """A described rover on a Raspberry Pi: gpiozero motors, HC-SR04, encoders, e-stop, camera.

    Nothing is opened before :meth:`connect`. Observations follow ``hardware.robot`` exactly:
    ``pose`` and ``wheel_speed`` come from the encoders through :class:`DiffDriveOdometry` (or, with
    no encoders, from integrating the applied duty through the motor model: dead reckoning),
    ``range``/``range_valid``/``range_age`` from the newest :class:`HCSR04` reading, ``image`` and
    ``image_age`` from the camera's newest frame. Stale data is reported as an age, never raised:
    the runtime's safety layer decides.

    While the e-stop button is held, :meth:`send_action` applies and returns ``(0, 0)``, and a press
    stops the motors at once from the button callback; latching is the safety layer's job.

    Args:
        desc: the robot description.
        pin_factory: gpiozero pin factory for every device; ``None`` selects the lgpio factory
            explicitly (:func:`hardware.pins.make_pin_factory`), owned and closed by this robot.
        camera: the camera to use; ``None`` builds one from ``desc.camera`` at connect.
        clock: time source for odometry, reading and frame ages.
        estop_pin: BCM pin of the e-stop button; ``None`` uses ``desc.safety.estop_pin``.
    """

    def __init__(
        self,
        desc: RobotDescription,
        *,
        pin_factory: Factory | None = None,
        camera: Camera | None = None,
        clock: Clock = time.monotonic,
        estop_pin: int | None = None,
    ):
        self.description = desc
        self.clock = clock
        self._pin_factory_arg = pin_factory
        self._camera_arg = camera
        self._estop_pin = estop_pin if estop_pin is not None else desc.safety.estop_pin
        self._features = robot_observation_features(desc)
        self._connected = False
        self._factory: Any = None
        self._own_factory = False
        self.drive: DriveTrain | None = None
        self.encoders: WheelEncoders | None = None
        self.ranger: HCSR04 | None = None
        self.estop: EStopButton | None = None
        self.sensors: DigitalSensors | None = None
        self.camera: Camera | None = None
        g = desc.geometry
        self.odometry = DiffDriveOdometry(g.wheel_radius, g.track_width)
        self._applied = np.zeros(2)
        # Odometry state on plain floats: 2-element numpy arrays cost more than the maths per tick.
        self._wheel_speed = (0.0, 0.0)
        self._last_steps = (0, 0)
        self._last_t = 0.0
        self._speed_t = 0.0
        self._speed_acc = (0.0, 0.0)
        self._speed_window = 0.5 / desc.control.rate
        self._lock = threading.RLock()

    # -- Robot interface -------------------------------------------------------------------------

    @property
    def observation_features(self) -> dict[str, Feature]:
        return dict(self._features)

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def pin_factory(self) -> Any:
        """The gpiozero pin factory in use (``None`` before connect)."""
        return self._factory

    def connect(self) -> None:
        """Open every described device; on failure, close what was opened and raise DeviceError."""
        if self._connected:
            return
        from gpiozero.exc import GPIOZeroError

        from hardware.pins import make_pin_factory

        d = self.description
        if self._pin_factory_arg is None:
            self._factory = make_pin_factory("pi")
            self._own_factory = True
        else:
            self._factory = self._pin_factory_arg
            self._own_factory = False
        pf = self._factory
        try:
            try:
                self.drive = DriveTrain(d.motors, pin_factory=pf)
                if d.encoders.enabled:
                    e = d.encoders
                    self.encoders = WheelEncoders(
                        e.left_a, e.left_b, e.right_a, e.right_b, pin_factory=pf
                    )
                else:
                    log.warning(
                        "no wheel encoders: pose and wheel_speed are dead reckoning from "
                        "the applied duty x max_wheel_speed (motor model), they drift"
                    )
                if d.ultrasonic.enabled:
                    u = d.ultrasonic
                    self.ranger = HCSR04(
                        u.trigger,
                        u.echo,
                        timeout=u.timeout,
                        rate=u.rate,
                        min_distance=u.min_distance,
                        max_distance=u.max_distance,
                        clock=self.clock,
                        pin_factory=pf,
                    )
                if d.sensors:
                    self.sensors = DigitalSensors(d.sensors, pin_factory=pf)
                if self._estop_pin is not None:
                    self.estop = EStopButton(self._estop_pin, pin_factory=pf)
                    self.estop.on_press(self._on_estop)
            except GPIOZeroError as e:
                raise _gpio_error("opening the robot's GPIO devices failed", e) from e
            if d.camera.enabled:
                self.camera = self._camera_arg or make_camera(d.camera, clock=self.clock)
                self.camera.connect()
                self.camera.wait_for_frame(timeout=2.0)
            if self.ranger is not None:
                self.ranger.measure()  # the first observation already has a reading
                self.ranger.start()
        except BaseException:
            self._close_all()
            raise
        now = self.clock()
        self._speed_window = 0.5 / d.control.rate
        self._last_t = self._speed_t = now
        self._last_steps = self.encoders.steps() if self.encoders else (0, 0)
        self._speed_acc = (0.0, 0.0)
        self._wheel_speed = (0.0, 0.0)
        self._applied = np.zeros(2)
        self._connected = True
        log.info(
            "PiRobot '%s' connected (description %s): motors=%s encoders=%s ultrasonic=%s "
            "camera=%s sensors=%s estop=%s",
            d.name,
            d.hash,
            d.motors.driver,
            d.encoders.enabled,
            d.ultrasonic.enabled,
            type(self.camera).__name__ if self.camera else None,
            [s.name for s in d.sensors],
            self._estop_pin,
        )

    def get_observation(self) -> dict[str, np.ndarray]:
        self._require_connected()
        with self._lock:
            now = self.clock()
            self._update_odometry(now)
            obs: dict[str, np.ndarray] = {
                "pose": self.odometry.pose,
                "wheel_speed": np.array(self._wheel_speed, np.float32),
            }
        if self.ranger is not None:
            r = self.ranger.latest
            if r is None:
                rng, valid, age = self.description.ultrasonic.max_distance, False, math.inf
            else:
                rng, valid, age = r.distance, r.valid, max(0.0, now - r.timestamp)
            obs["range"] = np.array([rng], np.float32)
            obs["range_valid"] = np.array([1.0 if valid else 0.0], np.float32)
            obs["range_age"] = np.array([age], np.float32)
        if self.camera is not None:
            frame = self.camera.latest()
            c = self.description.camera
            if frame is None:
                obs["image"] = np.zeros((c.height, c.width, 3), np.uint8)
                obs["image_age"] = np.array([math.inf], np.float32)
            else:
                obs["image"] = (
                    frame.image.copy()
                )  # callers may draw on it; the camera keeps its own
                obs["image_age"] = np.array([max(0.0, now - frame.timestamp)], np.float32)
        return obs

    def send_action(self, action: Any) -> np.ndarray:
        """Apply ``(left, right)`` duty; returns what was applied (``(0, 0)`` for non-finite input
        or while the e-stop is held)."""
        self._require_connected()
        a, ok = sanitize_action(action, self.description.safety.max_duty)
        if not ok:
            log.warning("non-finite action %r: stopping the motors", action)
        with self._lock:
            # checked under the lock the e-stop callback takes too: a press either lands before
            # this check (we apply zeros) or its callback stops the motors right after this write
            if self.estop is not None and self.estop.pressed:
                a = np.zeros(2)
            self._update_odometry(self.clock())
            assert self.drive is not None
            try:
                self.drive.drive(a[0], a[1])
            except DeviceError:
                self._applied = np.zeros(2)
                raise
            self._applied = a
        return a.copy()

    def stop(self) -> None:
        if self.drive is None:
            return
        with self._lock:
            if self._connected:
                self._update_odometry(self.clock())
            self.drive.stop()
            self._applied = np.zeros(2)

    def disconnect(self) -> None:
        """Stop the motors and close every device (idempotent)."""
        if not self._connected and self.drive is None:
            return
        self._connected = False
        self._close_all()
        log.info("PiRobot '%s' disconnected", self.description.name)

    def reset_odometry(self, pose: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
        with self._lock:
            if self._connected:
                self._update_odometry(self.clock())
            self.odometry.reset(pose)

    # -- extras ----------------------------------------------------------------------------------

    @property
    def estop_pressed(self) -> bool:
        """True while the e-stop button is held down (False without a button)."""
        return self.estop is not None and self.estop.pressed

    def on_estop(self, callback: Callable[[], None]) -> None:
        """Register ``callback()`` for e-stop presses (needs a connected robot with a button)."""
        if self.estop is None:
            raise DeviceError(
                "this robot has no e-stop button; set safety.estop_pin in the "
                "description (and connect first)"
            )
        self.estop.on_press(callback)

    @property
    def applied_action(self) -> np.ndarray:
        """The duty currently applied to the motors."""
        return self._applied.copy()

    def sensor_values(self) -> dict[str, int]:
        """Digital line/light sensors by name (1 = senses); empty without sensors."""
        return {} if self.sensors is None else self.sensors.values()

    # -- internals -------------------------------------------------------------------------------

    def _require_connected(self) -> None:
        if not self._connected:
            raise DeviceError("the robot is not connected; call connect() or use `with robot:`")

    def _on_estop(self) -> None:
        with self._lock:
            if self._connected:
                self._update_odometry(self.clock())
            drive = self.drive
            if drive is not None:
                try:
                    drive.stop()
                except Exception:
                    log.exception("stopping the motors on e-stop failed")
            self._applied = np.zeros(2)

    def _update_odometry(self, now: float) -> None:
        """Advance odometry to ``now``: encoder steps, or the applied duty through the motor model."""
        dt = now - self._last_t
        encoders = self.encoders
        if encoders is not None:
            steps = encoders.steps()
            tpr = self.description.encoders.ticks_per_rev
            last = self._last_steps
            dl = ticks_to_radians(steps[0] - last[0], tpr)
            dr = ticks_to_radians(steps[1] - last[1], tpr)
            self._last_steps = steps
        else:
            m = self.description.motors
            applied = self._applied
            dt_pos = max(dt, 0.0)
            dl = wheel_speed_for_duty(float(applied[0]), m) * dt_pos
            dr = wheel_speed_for_duty(float(applied[1]), m) * dt_pos
        self._last_t = now
        if dl or dr:
            self.odometry.update(dl, dr)
        # Wheel speed over a window of at least half a control period (one encoder step is coarse).
        acc_l, acc_r = self._speed_acc
        acc_l += dl
        acc_r += dr
        window = now - self._speed_t
        if window >= self._speed_window:
            self._wheel_speed = (acc_l / window, acc_r / window)
            acc_l = acc_r = 0.0
            self._speed_t = now
        self._speed_acc = (acc_l, acc_r)

    def _close_all(self) -> None:
        if self.drive is not None:
            try:
                self.drive.stop()
            except Exception as e:
                log.error("stopping the motors failed: %s", e)
        self._applied = np.zeros(2)
        for name in ("ranger", "camera", "estop", "sensors", "encoders", "drive"):
            dev = getattr(self, name)
            setattr(self, name, None)
            if dev is None:
                continue
            try:
                if name == "camera":
                    dev.disconnect()
                else:
                    dev.close()
            except Exception as e:
                log.warning("closing %s failed: %s", name, e)
        if self._own_factory and self._factory is not None:
            _close_quietly(self._factory, "pin factory")
        self._factory = None
        self._own_factory = False
