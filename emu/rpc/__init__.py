"""Sans-IO DCE/RPC association state machines (bytes in, PDUs and bytes out; no sockets)."""
