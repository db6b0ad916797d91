"""Fixtures shared by every test; helpers live in ``emu_testing``."""

from __future__ import annotations

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
