"""Time limits for tests that wait on real work in another process (a `twostage` subprocess that loads models
and embeds): one generous value, so a loaded machine (CPU cores shared with other jobs) slows the suite down
instead of failing it. Limits only, never timed assertions. pytest-timeout's per-test limit is in pyproject.toml.
"""

from __future__ import annotations

SUBPROCESS_TIMEOUT = 1200  # seconds for one CLI subprocess; idle runs take seconds to a minute or two
