"""openclaw-sup: the OpenClaw gateway rebuilt as a supervisor of isolated worker processes."""

__version__ = "0.1.0"
