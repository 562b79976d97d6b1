"""friendly_errors: every failure is one ``error:`` line with the right exit code; --debug shows the traceback."""

from __future__ import annotations

import httpx
import pytest
import typer
from chromadb.errors import InternalError
from typer.testing import CliRunner

from twostage_integrations.cli.app import DEBUG_ENV, fail, friendly_errors
from twostage_integrations.errors import InvalidParameterError


def app_raising(exc: BaseException | None = None, *, make=None) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @friendly_errors
    def boom() -> None:
        raise exc if make is None else make()

    return app


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (InvalidParameterError("limit must be >= 1, got 0"), 2, "limit must be >= 1"),
        (PermissionError(13, "Permission denied", "/data/db"), 2, "/data/db: Permission denied"),
        (InternalError("database disk image is malformed"), 2, "Chroma: database disk image is malformed"),
        (httpx.ConnectError("[Errno 111] Connection refused"), 2, "Connection refused"),
        (KeyboardInterrupt(), 130, "interrupted"),
        (ZeroDivisionError("division by zero"), 1, "unexpected ZeroDivisionError: division by zero"),
        (InvalidParameterError("first line\n  second line"), 2, "first line second line"),
    ],
)
def test_one_error_line(exc, code, text, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    result = CliRunner().invoke(app_raising(exc), [])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], result.output
    assert result.exc_info[0] is SystemExit  # handled: nothing propagated as a traceback


def test_exit_and_fail_pass_through(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    result = CliRunner().invoke(app_raising(make=lambda: fail("bad --filter")), [])
    assert result.exit_code == 2 and result.output.strip() == "error: bad --filter"


@pytest.mark.parametrize("exc", [PermissionError(13, "Permission denied"), InvalidParameterError("x")])
def test_debug_env_lets_the_exception_through(exc, monkeypatch):
    monkeypatch.setenv(DEBUG_ENV, "1")
    result = CliRunner().invoke(app_raising(exc), [])
    assert result.exc_info[0] is type(exc)
