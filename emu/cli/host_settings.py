"""``emu host serve``'s settings: the names, their TOML types and defaults, and how the flags and the config file
become a :class:`emu.kms.host.HostConfig` and a :class:`emu.net.kms_server.ServerConfig`.

Values are converted here, not by argparse, so a bad value (from a flag or from the file) is one line naming the
setting, and exit status 2, like every other :class:`UsageError`.
"""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emu.clock import Clock
from emu.durations import parse_duration
from emu.errors import UsageError

__all__ = [
    "SETTING_KINDS",
    "SETTING_NAMES",
    "HostSettings",
    "as_list",
    "build_clock",
    "build_host_config",
    "build_server_config",
    "load_settings",
    "number",
    "parse_minutes",
]


#: Settings a config file may hold (TOML keys; flags use the same names with dashes).
SETTING_NAMES = (
    "listen",
    "state",
    "durable",
    "idle_timeout",
    "max_connections",
    "ndr64",
    "btfn",
    "activation_interval",
    "renewal_interval",
    "kms_ids",
    "products",
    "host_key_group",
    "host_os",
    "unpatched",
    "host_build",
    "lcid",
    "hwid",
    "epids",
    "check_time_skew",
    "faults",
    "profile",
    "json_log",
    "log_exchanges",
    "log_level",
    "workers",
    "event_loop",
    "metrics",
    "publish",
    "dns_server",
    "tsig_key",
    "host_name",
    "priority",
    "weight",
    "ttl",
    "csvlk",
    "actsvc",
    "actsvc_cafile",
    "csvlk_cid",
    "clock",
)


def parse_minutes(value: Any, name: str) -> int:
    """Minutes from ``120``, ``"120"``, ``"2h"``, ``"7d"``, ``"1w"``, ``"90m"``, ``"3600s"`` (a plain number is
    minutes: the protocol's intervals are minutes).

    Raises:
        UsageError: not a duration, or not a whole number of minutes of at least 1.
    """
    minutes = parse_duration(value, name, default_unit="m") / 60
    if minutes != int(minutes) or not 1 <= minutes < 2**32:
        raise UsageError(f"{name}: {value!r} must be a whole number of minutes between 1 and 2^32-1")
    return int(minutes)


@dataclass(frozen=True)
class HostSettings:
    """The host's settings after merging defaults, the config file and the flags."""

    values: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.values.get(key)


_DEFAULTS: dict[str, Any] = {
    "listen": ["127.0.0.1:1688"],  # loopback unless asked: a lab tool is not reachable by accident
    "state": None,
    "durable": False,
    "idle_timeout": None,
    "max_connections": None,
    "ndr64": True,
    "btfn": True,
    "activation_interval": None,
    "renewal_interval": None,
    "kms_ids": [],
    "products": [],
    "host_key_group": [],
    "host_os": None,
    "unpatched": False,
    "host_build": None,
    "lcid": None,
    "hwid": None,
    "epids": {},
    "check_time_skew": False,
    "faults": [],
    "profile": "emu",
    "json_log": False,
    "log_exchanges": False,
    "log_level": "INFO",
    "workers": 1,
    "event_loop": "auto",
    "metrics": None,
    "publish": [],
    "dns_server": None,
    "tsig_key": None,
    "host_name": None,
    "priority": 0,
    "weight": 0,
    "ttl": 3600,
    "csvlk": None,
    "actsvc": None,
    "actsvc_cafile": None,
    "csvlk_cid": None,
    "clock": None,
}


def load_settings(args: argparse.Namespace) -> HostSettings:
    """Defaults, then the TOML file of ``--config``, then every flag actually given.

    Raises:
        UsageError: an unreadable or invalid file, an unknown key in it.
    """
    values = dict(_DEFAULTS)
    if getattr(args, "config", None):
        path = Path(args.config)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise UsageError(f"--config {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"--config {path}: not valid TOML: {exc}") from exc
        data = data.get("host", data)  # either top-level keys or a [host] table
        for key, value in data.items():
            norm = key.replace("-", "_")
            if norm not in SETTING_NAMES:
                raise UsageError(f"--config {path}: unknown setting {key!r}; known: {', '.join(SETTING_NAMES)}")
            _check_kind(norm, value, path)
            values[norm] = value
    for key in SETTING_NAMES:
        given = getattr(args, key, None)
        if given is None or given == []:
            continue
        if key == "epids":
            values[key] = {**values.get("epids", {}), **_epid_pairs(given)}
        else:
            values[key] = given
    return HostSettings(values)


#: The TOML type each setting takes (a flag is text, converted and checked where it is used).
SETTING_KINDS: dict[str, str] = {
    "listen": "list",
    "state": "text",
    "durable": "bool",
    "idle_timeout": "number",
    "max_connections": "int",
    "ndr64": "bool",
    "btfn": "bool",
    "activation_interval": "duration",
    "renewal_interval": "duration",
    "kms_ids": "list",
    "products": "list",
    "host_key_group": "list",
    "host_os": "text",
    "unpatched": "bool",
    "host_build": "int",
    "lcid": "int",
    "hwid": "text",
    "epids": "table",
    "check_time_skew": "bool",
    "faults": "list",
    "profile": "text",
    "json_log": "bool",
    "log_exchanges": "bool",
    "log_level": "text",
    "workers": "int",
    "event_loop": "text",
    "clock": "text",
    "metrics": "text",
    "publish": "list",
    "dns_server": "text",
    "tsig_key": "text",
    "host_name": "text",
    "priority": "int",
    "weight": "int",
    "ttl": "int",
    "csvlk": "text",
    "actsvc": "text",
    "actsvc_cafile": "text",
    "csvlk_cid": "text",
}
_KIND_WORDS = {
    "bool": "true or false",
    "int": "a whole number",
    "number": "a number",
    "duration": 'a number of minutes or a duration such as "2h"',
    "text": "a string",
    "list": "a string or a list of strings",
    "table": 'a table such as {Windows = "..."}',
}


def _fits(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):  # TOML's true/false are not numbers, text or lists here
        return False
    if kind == "int":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, (int, float))
    if kind == "duration":
        return isinstance(value, (int, float, str))
    if kind == "text":
        return isinstance(value, str)
    if kind == "list":
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _check_kind(name: str, value: Any, path: Path) -> None:
    """A config value of the wrong TOML type is a usage error naming the setting (never coerced)."""
    kind = SETTING_KINDS.get(name, "any")
    if kind != "any" and not _fits(kind, value):
        raise UsageError(f"--config {path}: {name} must be {_KIND_WORDS[kind]}, not {value!r} ({type(value).__name__})")


def _epid_pairs(texts: list[str]) -> dict[str, str]:
    out = {}
    for text in texts:
        name, sep, epid = text.partition("=")
        if not sep or not name.strip() or not epid.strip():
            raise UsageError(
                f"--epid {text!r}: expected CSVLK=EPID, e.g. Windows=03612-00206-556-123727-03-1033-26100.0000-0012025"
            )
        out[name.strip()] = epid.strip()
    return out


def number(value: Any, name: str, kind: type, low: float | None = None) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name}: {value!r} is not a number") from None
    if low is not None and number < low:
        raise UsageError(f"{name}: {value!r} must be at least {low}")
    return number


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def build_host_config(settings: HostSettings) -> Any:
    """The :class:`emu.kms.host.HostConfig` the settings describe.

    Raises:
        UsageError: any bad value, naming the setting.
    """
    from emu.kms import epid as _epid
    from emu.kms.faults import parse_fault
    from emu.kms.host import (
        DEFAULT_ACTIVATION_INTERVAL,
        DEFAULT_LCID,
        DEFAULT_RENEWAL_INTERVAL,
        HostConfig,
        resolve_kms_ids,
    )

    kwargs: dict[str, Any] = {
        "activation_interval": parse_minutes(
            settings["activation_interval"] or DEFAULT_ACTIVATION_INTERVAL, "--activation-interval"
        ),
        "renewal_interval": parse_minutes(
            settings["renewal_interval"] or DEFAULT_RENEWAL_INTERVAL, "--renewal-interval"
        ),
        "kms_ids": resolve_kms_ids(as_list(settings["kms_ids"]), as_list(settings["products"])),
        "host_key_groups": tuple(as_list(settings["host_key_group"])),
        "host_os": str(settings["host_os"]) if settings["host_os"] else None,
        "unpatched": bool(settings["unpatched"]),
        "host_build": number(settings["host_build"], "--host-build", int) if settings["host_build"] else None,
        "lcid": number(settings["lcid"] or DEFAULT_LCID, "--lcid", int),
        "epids": {str(k): str(v) for k, v in (settings["epids"] or {}).items()},
        "check_time_skew": bool(settings["check_time_skew"]),
        "faults": tuple(parse_fault(text) for text in as_list(settings["faults"])),
        "profile": str(settings["profile"]),
    }
    if settings["hwid"]:
        try:
            kwargs["hwid"] = _epid.parse_hwid(str(settings["hwid"]))
        except UsageError as exc:
            raise UsageError(f"--hwid: {exc}") from None
    # Canonical CSVLK spelling, so a stored ePID and a configured one meet under one name.
    kwargs["epids"] = {_epid.csvlk(name).name: text for name, text in kwargs["epids"].items()}
    return HostConfig(**kwargs)


def build_server_config(settings: HostSettings) -> Any:
    """The :class:`emu.net.kms_server.ServerConfig` the settings describe."""
    from emu.net.kms_server import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, ServerConfig, parse_listen

    listen = tuple(parse_listen(text) for text in as_list(settings["listen"]))
    idle = settings["idle_timeout"]
    maxconn = settings["max_connections"]
    return ServerConfig(
        listen=listen,
        idle_timeout=number(DEFAULT_IDLE_TIMEOUT if idle is None else idle, "--idle-timeout", float, 0),
        max_connections=number(DEFAULT_MAX_CONNECTIONS if maxconn is None else maxconn, "--max-connections", int, 1),
        ndr64=bool(settings["ndr64"]),
        btfn=bool(settings["btfn"]),
        json_log=bool(settings["json_log"]),
        log_exchanges=bool(settings["log_exchanges"]),
    )


def build_clock(settings: HostSettings) -> Clock:
    """The host's clock: the real one, or the shared scaled clock of ``--clock`` / ``clock =`` (a lab scenario).

    Raises:
        UsageError: a clock text that is not ``scale=N[,origin=UNIX][,epoch=UNIX]``.
    """
    from emu.clock import ScaledClock, WallClock, parse_clock_spec

    value = settings["clock"]
    if value is None:
        return WallClock()
    if isinstance(value, ScaledClock):
        return value
    try:
        return parse_clock_spec(str(value))
    except ValueError as exc:
        raise UsageError(f"clock: {exc}") from None
