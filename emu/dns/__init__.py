"""Sans-IO DNS logic: zones, RFC 2136 updates, TSIG, SRV selection (no sockets)."""
