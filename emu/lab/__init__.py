"""Activation networks in Linux network namespaces (labs): every party its own namespace, real emu processes."""
