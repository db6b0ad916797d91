"""Scenarios on a virtual clock: hosts, clients and DNS wired together."""
