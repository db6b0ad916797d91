"""The locustfile ``emu load`` hands to Locust: emu's KMS client user (see :mod:`emu.load.kms_user`)."""

from emu.load.kms_user import KmsClientUser

__all__ = ["KmsClientUser"]
