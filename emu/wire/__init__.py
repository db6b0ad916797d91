"""Wire layer: Construct definitions of every frame emu speaks, with typed encode/decode.

Construct containers never leave this package: callers see frozen dataclasses, and decoders
raise only :class:`emu.errors.DecodeError`.
"""
