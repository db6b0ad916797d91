"""Scenarios on a virtual clock in one process: hosts, clients and DNS wired together on loopback (the demo)."""
