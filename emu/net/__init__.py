"""Sockets and servers: the asyncio KMS host and client, the DNS server, publisher and discovery, the host's SQLite state, and network namespaces."""
