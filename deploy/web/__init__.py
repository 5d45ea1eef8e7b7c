"""Web teleoperation served from the robot (``sim2pi teleop --web``).

- :mod:`deploy.web.protocol`: the strict wire protocol (every client message validated).
- :mod:`deploy.web.source`: :class:`WebSource`, the page as a command source (deadman, takeover),
  and :class:`LiveFeed` (telemetry + JPEG live view).
- :mod:`deploy.web.app`: the Starlette app and its security (token, Origin, limits).
- :mod:`deploy.web.server`: uvicorn on a background thread.
- :mod:`deploy.web.runner`: the session driver around the one ``ControlLoop``.
- :mod:`deploy.web.cli`: the ``teleop`` command.
"""
