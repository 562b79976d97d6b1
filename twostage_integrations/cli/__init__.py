"""The ``twostage`` command line. Each subcommand lives in its own module and registers on ``app``."""

from . import demo, ingest, query  # noqa: F401 - registers the commands
from .app import app

__all__ = ["app"]
