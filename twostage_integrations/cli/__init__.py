"""The ``twostage`` command line. Each subcommand lives in its own module and registers on ``app``;
a new subcommand is one module plus one import line below."""

# isort: skip_file
from .app import app
from . import demo  # noqa: F401 - registers the command
from . import ingest  # noqa: F401
from . import query  # noqa: F401
from . import evaluate  # noqa: F401
from . import serve  # noqa: F401

__all__ = ["app"]
from . import bench  # noqa: F401
from . import finetune  # noqa: F401
from . import calibrate, doctor  # noqa: F401
