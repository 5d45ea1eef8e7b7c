"""Errors and warnings raised by sim2pi.

Every error derives from :class:`Sim2PiError`; concrete errors also derive from the built-in
exception a caller would naturally catch (``SpecMismatch`` is a ``ValueError``), so code that does not
know sim2pi still handles them sensibly.
"""

from __future__ import annotations


class Sim2PiError(Exception):
    """Base class of every error sim2pi raises on purpose."""


class DescriptionError(Sim2PiError, ValueError):
    """A robot description file is invalid. The message names the file, the field and the fix."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None):
        self.file = file
        self.field = field
        where = ""
        if file:
            where += f"{file}: "
        if field:
            where += f"field '{field}': "
        super().__init__(where + message)


class SpecMismatch(Sim2PiError, ValueError):
    """Two specs disagree. The message names the feature and both values; nothing is reshaped."""

    def __init__(self, feature: str, what: str, ours: object, theirs: object, hint: str = ""):
        self.feature = feature
        self.what = what
        self.ours = ours
        self.theirs = theirs
        msg = f"feature '{feature}': {what} differs: expected {ours!r}, got {theirs!r}"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)


class DeviceError(Sim2PiError, RuntimeError):
    """A hardware device (pin factory, sensor, camera) could not be used."""


class StaleData(Sim2PiError, TimeoutError):
    """A sensor reading or camera frame is older than allowed."""


class BundleError(Sim2PiError, ValueError):
    """A policy bundle is missing files, malformed, or made for another robot."""


class DatasetError(Sim2PiError, ValueError):
    """A dataset on disk is malformed. The message names the episode and the file."""


class Sim2PiWarning(UserWarning):
    """Base class of sim2pi warnings (filter them by class in tests)."""


class SafetyWarning(Sim2PiWarning):
    """The safety layer changed or refused a command."""
