"""Session fixture: one Samba AD DC (provisioned once, in a temp dir; served in its own netns)."""

from __future__ import annotations

import pytest
from emu_testing import require_tool


@pytest.fixture(scope="session")
def samba_dc(tmp_path_factory: pytest.TempPathFactory):
    from samba_dc import SambaDc, provision

    from emu.net import netns

    netns.require_netns_support()
    samba = require_tool("samba")
    samba_tool = require_tool("samba-tool")
    tree = tmp_path_factory.mktemp("samba") / "kms.test"
    provision(tree, samba_tool)
    dc = SambaDc(tree, samba)
    yield dc
    dc.stop()
