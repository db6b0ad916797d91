"""LDAPv3 (RFC 4511) for emu, sans-IO: messages as frozen dataclasses, BER via ``emu.wire.ldap``,
filters in their RFC 4515 text form, and PDU framing of a byte stream."""
