"""The scenarios shipped with emu (``emu/data/scenarios/*.toml``): run by name, listed by ``emu lab list``."""

from __future__ import annotations

from importlib import resources

from emu.errors import UsageError

__all__ = ["bundled_names", "bundled_text"]


def _folder() -> resources.abc.Traversable:
    return resources.files("emu") / "data" / "scenarios"


def bundled_names() -> list[str]:
    """Names of the bundled scenarios, sorted."""
    return sorted(p.name.removesuffix(".toml") for p in _folder().iterdir() if p.name.endswith(".toml"))


def bundled_text(name: str) -> str:
    """The TOML text of bundled scenario ``name``.

    Raises:
        UsageError: no scenario of that name (the message lists them).
    """
    path = _folder() / f"{name}.toml"
    if not path.is_file():
        raise UsageError(
            f"{name!r} is neither a scenario file nor a bundled scenario; bundled: {', '.join(bundled_names())} "
            "(emu lab list)"
        )
    return path.read_text()
