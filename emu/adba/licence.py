"""emu-licence/1: the licence blobs emu writes into an activation object's msSPP-*License attributes.

emu-defined (docs/adba.md "Licences"). Real objects hold XrML licences signed by Microsoft, which are not
public; emu writes a small XML document that says what it is (``emu/1``), carries the SKU, the KMS IDs,
the forest it was issued for and the issue time, and is signed with emu's lab Ed25519 key. The key is
derived from a fixed, public seed: anyone can forge these licences, which is the point: they are
visibly fake and can never activate real Windows.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["LAB_KEY_SEED", "Licence", "LicenceError", "sign_licence", "verify_licence"]

#: Public seed of emu's lab signing key (emu-defined; not a secret, by design).
LAB_KEY_SEED = hashlib.sha256(b"emu lab ADBA licence signing key, not a secret, emu/1").digest()
_BLOB = re.compile(
    rb'^<emuLicence version="emu/1" kind="(?P<kind>[a-z]+)"><Payload>(?P<payload>[A-Za-z0-9+/=]+)</Payload>'
    rb'<Signature alg="Ed25519">(?P<sig>[A-Za-z0-9+/=]+)</Signature></emuLicence>$'
)


class LicenceError(ValueError):
    """A blob that is not an emu-licence/1, or whose signature or content does not verify."""


@dataclass(frozen=True)
class Licence:
    kind: str  # online | phone | config | issuance
    forest: str
    sku_id: uuid.UUID
    kms_ids: tuple[uuid.UUID, ...]
    issued: float


def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(LAB_KEY_SEED)


def sign_licence(lic: Licence) -> bytes:
    """The blob for ``lic``."""
    payload = json.dumps(
        {
            "format": "emu-licence/1",
            "kind": lic.kind,
            "forest": lic.forest,
            "sku": str(lic.sku_id),
            "kmsIds": [str(k) for k in lic.kms_ids],
            "issued": lic.issued,
            "note": "emu lab licence; cannot activate Windows",
        },
        sort_keys=True,
    ).encode()
    sig = _key().sign(payload)
    return (
        f'<emuLicence version="emu/1" kind="{lic.kind}"><Payload>'.encode()
        + base64.b64encode(payload)
        + b'</Payload><Signature alg="Ed25519">'
        + base64.b64encode(sig)
        + b"</Signature></emuLicence>"
    )


def verify_licence(blob: bytes) -> Licence:
    """Parse and verify a blob; LicenceError says what is wrong."""
    match = _BLOB.match(blob)
    if match is None:
        raise LicenceError("not an emu-licence/1 document")
    payload = base64.b64decode(match["payload"])
    try:
        _key().public_key().verify(base64.b64decode(match["sig"]), payload)
    except InvalidSignature:
        raise LicenceError("signature does not verify with emu's lab key") from None
    try:
        doc = json.loads(payload)
        return Licence(
            doc["kind"],
            doc["forest"],
            uuid.UUID(doc["sku"]),
            tuple(uuid.UUID(k) for k in doc["kmsIds"]),
            float(doc["issued"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise LicenceError(f"licence payload malformed: {exc}") from None
