"""What an activation object records about a lab CSVLK, from emu's product data and ePID code.

A lab CSVLK (``emu.adba.labkey``) names a KMS host key group; the object gets that group's KMS counted
IDs (retail and preview groups excluded), an ePID of the group made by emu's ePID code, the lab SKU ID
and the last five characters of the key. A GVLK is refused with 0xC004F07D (wrong key type), anything
else with 0xC004F050 (documented codes; the checks are emu's).
"""

from __future__ import annotations

import datetime as _dt

from emu.adba.admin import AdbaAdminError, CsvlkInfo
from emu.adba.labkey import LabKeyError, csvlk_sku_id, lab_csvlk, parse_lab_csvlk
from emu.errors import UsageError
from emu.kms import epid, products
from emu.rng import Rng

__all__ = ["csvlk_info", "group_kms_ids", "lab_key_for_group"]

#: The host build whose ePIDs objects carry (Windows Server 2019).
EPID_BUILD = 17763


def lab_key_for_group(name: str) -> str:
    """The lab CSVLK of the CSVLK group ``name`` ("Windows", "Office2016", ...)."""
    return lab_csvlk(epid.CSVLKS.index(epid.csvlk(name)))


def group_kms_ids(name: str) -> tuple[products.KmsItem, ...]:
    """The KMS counted IDs a CSVLK group's host key activates."""
    return tuple(
        item
        for item in products.all_kms_items()
        if item.csvlk.lower() == name.lower() and not item.retail and not item.preview
    )


def csvlk_info(key: str, *, rng: Rng, today: _dt.date) -> CsvlkInfo:
    """The object content for lab CSVLK ``key``; AdbaAdminError for other keys."""
    if products.sku_by_gvlk(key.strip().upper()) is not None:
        raise AdbaAdminError(0xC004F07D, f"{key} is a GVLK, not a KMS host key (CSVLK)")
    try:
        number = parse_lab_csvlk(key)
    except LabKeyError as exc:
        raise AdbaAdminError(0xC004F050, str(exc)) from None
    if number >= len(epid.CSVLKS):
        raise AdbaAdminError(0xC004F050, f"lab CSVLK number {number} names no CSVLK group")
    csvlk = epid.CSVLKS[number]
    group_id = csvlk.group_id
    items = group_kms_ids(csvlk.name)
    if not items:
        raise AdbaAdminError(0xC004F050, f"CSVLK group {csvlk.name} activates no product group in emu's data")
    try:
        pid = epid.generate_epid(csvlk, EPID_BUILD, 1033, rng, today)
    except UsageError:
        pid = csvlk.default_epid or f"03612-{group_id:05d}-000-000000-03-1033-{EPID_BUILD}.0000-0012026"
    return CsvlkInfo(csvlk_sku_id(number), tuple(i.id for i in items), pid, key.strip().upper()[-5:])
