"""The activation service's rules over its ledger, without the storage (emu/net/actsvc_store.py keeps it).

Documented: a MAK has a fixed number of activations and every activation counts (0xC004C020 at the
limit); a blocked key is refused (0xC004C003); an unknown key is out of range (0xC004C001); a KMS host
key works on up to 6 hosts, each activated once and reactivated up to 9 times (0xC004C008 past that).
Emu policy (undocumented upstream): an ADBA forest is one "host" of its CSVLK; reactivating the same
machine with a MAK uses a new activation (``same_machine_consumes``).
"""

from __future__ import annotations

from dataclasses import dataclass

from emu.mak.keys import KeyKind

__all__ = [
    "CSVLK_ACTIVATIONS_PER_HOST",
    "CSVLK_HOSTS",
    "E_BLOCKED",
    "E_MAK_LIMIT",
    "E_OUT_OF_RANGE",
    "E_UNLOCK_EXCEEDED",
    "KeyRecord",
    "admit",
    "remaining",
]

CSVLK_HOSTS = 6
CSVLK_ACTIVATIONS_PER_HOST = 1 + 9
E_OUT_OF_RANGE = 0xC004C001
E_BLOCKED = 0xC004C003
E_UNLOCK_EXCEEDED = 0xC004C008
E_MAK_LIMIT = 0xC004C020


@dataclass(frozen=True)
class KeyRecord:
    """One key in the ledger: for a MAK its limit and used count; for a CSVLK its activations per host."""

    key: str
    kind: KeyKind
    group: str
    limit: int
    used: int = 0
    blocked: bool = False
    hosts: tuple[tuple[str, int], ...] = ()

    def host_count(self, identity: str) -> int:
        return dict(self.hosts).get(identity, 0)


def admit(record: KeyRecord | None, identity: str) -> int:
    """0 if ``identity`` (a machine's hardware digits, or a forest) may activate with ``record``, else the
    activation service's HRESULT. The caller records the activation in the same transaction."""
    if record is None or record.kind is KeyKind.GVLK:
        return E_OUT_OF_RANGE
    if record.blocked:
        return E_BLOCKED
    if record.kind is KeyKind.MAK:
        return E_MAK_LIMIT if record.used >= record.limit else 0
    known = record.host_count(identity)
    if known:
        return E_UNLOCK_EXCEEDED if known >= CSVLK_ACTIVATIONS_PER_HOST else 0
    return E_UNLOCK_EXCEEDED if len(record.hosts) >= CSVLK_HOSTS else 0


def remaining(record: KeyRecord) -> int:
    """Activations left: for a MAK its limit minus used; for a CSVLK the activations its hosts have left."""
    if record.kind is KeyKind.MAK:
        return max(0, record.limit - record.used)
    used_hosts = sum(CSVLK_ACTIVATIONS_PER_HOST - min(n, CSVLK_ACTIVATIONS_PER_HOST) for _, n in record.hosts)
    return used_hosts + (CSVLK_HOSTS - len(record.hosts)) * CSVLK_ACTIVATIONS_PER_HOST
