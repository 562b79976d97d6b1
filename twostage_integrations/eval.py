"""Alias of :mod:`twostage_integrations.evaluation` (the evaluation API; ``twostage eval`` runs it)."""

from .evaluation import *  # noqa: F403
from .evaluation import __all__  # noqa: F401
