"""The edges: asyncio servers and clients, Scapy, pcaps, capture, replay and network namespaces."""
