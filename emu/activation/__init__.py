"""The client's multi-path activation order, sans-IO: ADBA for domain members, then KMS, then further
paths (MAK), under the activation-type policy (docs/adba.md "Order of the paths").

This package sits above the protocol packages (it may import emu.kms, emu.adba and emu.dns) and below
emu.net: the attempts themselves are injected callables, so no I/O happens here.
"""
