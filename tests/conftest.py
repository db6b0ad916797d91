"""Fixtures shared by every test; helpers live in ``emu_testing``."""

from __future__ import annotations

import os

import pytest
from emu_testing import (  # noqa: F401  (re-exported for older imports)
    VECTORS_DIR,
    VectorPdu,
    require_tool,
    requires_vectors,
    vector_exchanges,
    vector_files,
    vector_pdus,
)

from emu.clock import VirtualClock
from emu.rng import seeded


@pytest.fixture
def virtual_clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def rng():
    return seeded(1234)


#: Skip reasons that say a tool, a privilege or a file CI must provide is missing. CI runs as root on a
#: machine the project's scripts set up, so under CI=true such a skip is a failure of the setup, not a pass.
_SETUP_SKIPS = ("needs root", "not installed", "not found", "missing", "iproute2", "set EMU_VECTORS", "not generated")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if not os.environ.get("CI") or not report.skipped or not isinstance(report.longrepr, tuple):
        return
    reason = str(report.longrepr[2])
    if any(word in reason for word in _SETUP_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"under CI=true this must not skip: {reason}"
