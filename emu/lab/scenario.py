"""Scenario files: a whole activation network, its timeline of events and what must hold, in TOML.

``emu lab run FILE.toml`` (or the name of a bundled scenario) reads one of these; docs/scenarios.md
is the reference with an example of every table. The file is checked here completely before
anything is built, and every mistake is a :class:`UsageError` naming the file, the table and the
key, so a typo costs a second, not a namespace setup.

Times (``at``, ``duration``, ``arrive_over``, ...) are durations on the scenario's virtual clock
(``"90m"``, ``"2h"``, ``"3d"``, ``"1w"``; a bare number is seconds), counted from the moment the
clients start.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu.durations import parse_duration
from emu.errors import UsageError
from emu.kms import products
from emu.kms.products import Sku
from emu.lab.scenario_mak import ActsvcSpec, check_mak_references, group_mak_fields, parse_actsvcs
from emu.lab.toml_table import Table as _Table
from emu.lab.toml_table import tables as _tables

__all__ = [
    "ACTIONS",
    "EXPECTATION_KINDS",
    "MAX_CLIENTS",
    "MAX_NAMESPACES",
    "ClientGroup",
    "DcSpec",
    "DnsSpec",
    "Event",
    "Expectation",
    "HostSpec",
    "Publication",
    "Scenario",
    "Segment",
    "load_scenario",
    "parse_scenario",
]

#: What an ``[[event]]`` may do, and what its ``target`` names.
ACTIONS = {
    "stop": "host",  # SIGTERM: the host withdraws its records and exits
    "kill": "host",  # SIGKILL: gone at once, its SRV record stays behind
    "start": "host",  # start a stopped or killed host again (same state file: its table survives)
    "key-change": "host",  # restart the host with another host key (key_groups = [...])
    "dns-down": "dns",  # SIGTERM the DNS server (its journal keeps every accepted update)
    "dns-up": "dns",
    "partition": "party-or-segment",  # cut it off: every packet to and from it dropped
    "heal": "party-or-segment",
    "loss": "party-or-segment",  # percent = N: drop N % of packets on its link(s)
    "delay": "party-or-segment",  # delay = "40ms", jitter = "10ms" (needs tc netem)
    "clear": "party-or-segment",  # remove loss and delay
    "skew": "group",  # offset = "-6h": the group's clients send ClientTime that far off
    "delete-object": "dc",  # group = "Windows": delete that activation object (emu adba delete)
    "add-object": "dc",  # group = "Windows": create it (online activation of the group's lab CSVLK)
    "vamt-collect": "group",  # VAMT installs the group's MAK and collects its IIDs into a CIL file
    "vamt-acquire": "group",  # via = PARTY: from that party's namespace, get the CIDs for the CIL (BatchActivation)
    "vamt-apply": "group",  # deposit the CIL's CIDs on the group's machines
}
#: What an ``[[expect]]`` may check (docs/scenarios.md describes each).
EXPECTATION_KINDS = (
    "activated-by",
    "never-below-threshold",
    "tables-match",
    "failover-within",
    "srv-withdrawn-within",
    "count",
    "all-answered",
    "error-seen",
)
#: Bounds that keep a run inside one machine.
MAX_NAMESPACES = 250
MAX_CLIENTS = 2000
MAX_SEGMENTS = 20


@dataclass(frozen=True, slots=True)
class Segment:
    """A LAN: one bridge, one subnet; several segments are joined by a router (namespace ``rt``)."""

    name: str
    subnet: ipaddress.IPv4Network


@dataclass(frozen=True, slots=True)
class DnsSpec:
    """An ``emu dns serve`` authoritative for ``zones``; hosts publishing there may update it (TSIG)."""

    name: str
    segment: str
    zones: tuple[str, ...]
    srv_max_age: float | None


@dataclass(frozen=True, slots=True)
class DcSpec:
    """An ``emu dc serve`` for forest ``forest`` (a zone of a [[dns]], where it registers its
    ``_ldap._tcp.dc._msdcs`` SRV record), with activation objects for ``objects`` (CSVLK groups)."""

    name: str
    segment: str
    forest: str
    dns: str
    objects: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Publication:
    """One SRV record a host publishes: in ``zone`` with ``priority`` and ``weight``."""

    zone: str
    priority: int
    weight: int


@dataclass(frozen=True, slots=True)
class HostSpec:
    """An ``emu host serve``: its key's groups, its SRV publications, its intervals."""

    name: str
    segment: str
    key_groups: tuple[str, ...]
    publish: tuple[Publication, ...]
    dns: str | None
    activation_interval: str | None
    renewal_interval: str | None
    check_time_skew: bool
    start: bool
    csvlk: str | None = None  # a KMS host key of an [[actsvc]]: activated there before the host answers
    actsvc: str | None = None


@dataclass(frozen=True, slots=True)
class ClientGroup:
    """``count`` machines alike: product mix, how they find a host, when they arrive, their namespaces."""

    name: str
    segment: str
    count: int
    products: tuple[tuple[Sku, float], ...]
    domain: str | None
    host: str | None
    dns: str | None
    start: float
    arrive_over: float
    vm: bool
    shared_namespace: bool
    retry_interval: float | None
    renewal_interval: float | None
    domain_member: bool = False
    act_type: str = "any"
    mak: str | None = None  # a MAK of an [[actsvc]]: the group's machines are MAK clients (no KMS)
    mak_mode: str = "online"
    actsvc: str | None = None

    def product_of(self, index: int) -> Sku:
        """The product of client ``index`` (0-based): the mix's shares, assigned in order."""
        position = (index + 0.5) / self.count
        running = 0.0
        for sku, share in self.products:
            running += share
            if position <= running + 1e-9:
                return sku
        return self.products[-1][0]


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happens at virtual time ``at``: see :data:`ACTIONS`."""

    at: float
    action: str
    target: str
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.action} {self.target}" + (f" ({extra})" if extra else "")


@dataclass(frozen=True, slots=True)
class Expectation:
    """A check of the run (:data:`EXPECTATION_KINDS`); ``options`` are the kind's own keys."""

    kind: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole scenario file, checked."""

    name: str
    title: str
    description: str
    scale: float
    duration: float
    epoch: float
    segments: tuple[Segment, ...]
    dns: tuple[DnsSpec, ...]
    dcs: tuple[DcSpec, ...]
    hosts: tuple[HostSpec, ...]
    groups: tuple[ClientGroup, ...]
    events: tuple[Event, ...]
    expectations: tuple[Expectation, ...]
    source: str = ""
    actsvcs: tuple[ActsvcSpec, ...] = ()

    @property
    def clients(self) -> int:
        return sum(g.count for g in self.groups)

    @property
    def namespaces(self) -> int:
        """Namespaces the run makes: the switch, a router when there are segments to join, every party."""
        clients = sum(1 if g.shared_namespace else g.count for g in self.groups)
        servers = len(self.dns) + len(self.dcs) + len(self.hosts) + len(self.actsvcs)
        return 1 + (len(self.segments) > 1) + servers + clients


def _segments(data: dict[str, Any], source: str) -> tuple[Segment, ...]:
    found: list[Segment] = []
    for n, table in enumerate(_tables(data, "segment", source)):
        name = table.name()
        text = table.get("subnet", f"10.213.{n + 1}.0/24", kind=str)
        try:
            subnet = ipaddress.IPv4Network(text)
        except ValueError as exc:
            raise UsageError(f"{table.where}: subnet {text!r}: {exc}") from None
        if subnet.num_addresses < 16 or not subnet.is_private:
            raise UsageError(f"{table.where}: subnet {text!r}: a private IPv4 network of at least 16 addresses")
        table.done()
        found.append(Segment(name, subnet))
    if not found:
        found.append(Segment("lan", ipaddress.IPv4Network("10.213.1.0/24")))
    if len(found) > MAX_SEGMENTS:
        raise UsageError(f"{source}: at most {MAX_SEGMENTS} segments")
    for i, a in enumerate(found):
        for b in found[i + 1 :]:
            if a.name == b.name or a.subnet.overlaps(b.subnet):
                raise UsageError(f"{source}: segments {a.name} and {b.name} have the same name or overlapping subnets")
    return tuple(found)


def _segment_of(table: _Table, segments: tuple[Segment, ...]) -> str:
    name = str(table.get("segment", segments[0].name, kind=str))
    if name not in {s.name for s in segments}:
        raise UsageError(f"{table.where}: segment {name!r} is not declared ([[segment]] name = ...)")
    return name


def _dns(data: dict[str, Any], source: str, segments: tuple[Segment, ...]) -> tuple[DnsSpec, ...]:
    found = []
    for table in _tables(data, "dns", source):
        zones = table.get("zones", None, kind=list) or [table.get("zone", "kms.test", kind=str)]
        found.append(
            DnsSpec(
                table.name(),
                _segment_of(table, segments),
                tuple(str(z).strip(".").lower() for z in zones),
                table.duration("srv_max_age"),
            )
        )
        table.done()
    return tuple(found)


def _dcs(
    data: dict[str, Any], source: str, segments: tuple[Segment, ...], dns: tuple[DnsSpec, ...]
) -> tuple[DcSpec, ...]:
    from emu.activation.csvlk import lab_key_for_group

    found = []
    zones = {z: d.name for d in dns for z in d.zones}
    for table in _tables(data, "dc", source):
        name = table.name()
        forest = str(table.need("forest", kind=str)).strip(".").lower()
        if forest not in zones:
            raise UsageError(
                f"{table.where}: forest {forest!r} is served by no [[dns]] (the DC registers itself there)"
            )
        objects = tuple(str(g) for g in table.get("objects", ["Windows"], kind=list))
        for group in objects:
            try:
                lab_key_for_group(group)
            except UsageError as exc:
                raise UsageError(f"{table.where}: objects: {exc}") from None
        found.append(DcSpec(name, _segment_of(table, segments), forest, zones[forest], objects))
        table.done()
    return tuple(found)


def _hosts(
    data: dict[str, Any], source: str, segments: tuple[Segment, ...], dns: tuple[DnsSpec, ...]
) -> list[HostSpec]:
    from emu.kms.host_keys import host_key_group

    found = []
    zones = {z: d.name for d in dns for z in d.zones}
    for table in _tables(data, "host", source):
        name = table.name()
        groups = table.get("key_groups", ["Windows Server 2022"], kind=list)
        for group in groups:
            try:
                host_key_group(str(group))
            except UsageError as exc:
                raise UsageError(f"{table.where}: key_groups: {exc}") from None
        publications = []
        for n, item in enumerate(table.get("publish", [], kind=list)):
            entry = _Table(item, f"{table.where} publish #{n + 1}")
            zone = str(entry.need("zone", kind=str)).strip(".").lower()
            if zone not in zones:
                raise UsageError(f"{entry.where}: zone {zone!r} is served by no [[dns]] of the scenario")
            priority, weight = entry.get("priority", 0, kind=int), entry.get("weight", 100, kind=int)
            if not (0 <= priority <= 0xFFFF and 0 <= weight <= 0xFFFF):
                raise UsageError(f"{entry.where}: priority and weight are 0..65535")
            entry.done()
            publications.append(Publication(zone, priority, weight))
        if len({p.zone for p in publications}) > 1:
            raise UsageError(f"{table.where}: a host publishes in one zone's DNS server (give one zone)")
        found.append(
            HostSpec(
                name=name,
                segment=_segment_of(table, segments),
                key_groups=tuple(str(g) for g in groups),
                publish=tuple(publications),
                dns=zones[publications[0].zone] if publications else None,
                activation_interval=table.get("activation_interval", None, kind=(str, int)),
                renewal_interval=table.get("renewal_interval", None, kind=(str, int)),
                check_time_skew=bool(table.get("check_time_skew", False, kind=bool)),
                start=bool(table.get("start", True, kind=bool)),
                csvlk=table.get("csvlk", None, kind=str),
                actsvc=table.get("actsvc", None, kind=str),
            )
        )
        table.done()
    return found


def _product_mix(table: _Table) -> tuple[tuple[Sku, float], ...]:
    given = table.get("products", None, kind=dict)
    if given is None:
        return ((products.lookup(str(table.get("product", "Windows 10/11 Enterprise", kind=str))), 1.0),)
    mix = []
    for name, share in given.items():
        if isinstance(share, bool) or not isinstance(share, (int, float)) or share <= 0:
            raise UsageError(f"{table.where}: products: the share of {name!r} must be a positive number")
        mix.append((products.lookup(name), float(share)))
    total = sum(s for _, s in mix)
    if not mix:
        raise UsageError(f"{table.where}: products is empty")
    return tuple((sku, share / total) for sku, share in mix)


def _groups(
    data: dict[str, Any],
    source: str,
    segments: tuple[Segment, ...],
    dns: tuple[DnsSpec, ...],
    hosts: list[HostSpec],
    forests: set[str],
) -> list[ClientGroup]:
    found: list[ClientGroup] = []
    zones = {z: d.name for d in dns for z in d.zones}
    for table in _tables(data, "clients", source):
        name = table.name()
        count = table.need("count", kind=int)
        if not 1 <= count <= MAX_CLIENTS:
            raise UsageError(f"{table.where}: count must be 1..{MAX_CLIENTS}")
        domain = table.get("domain", None, kind=str)
        host = table.get("host", None, kind=str)
        if "mak" in table.data and table.data.get("mak_mode") != "fallback":
            if domain is not None or host is not None:
                raise UsageError(
                    f"{table.where}: a MAK group activates with its key, not through KMS: no domain or host "
                    '(mak_mode = "fallback" tries KMS first)'
                )
        elif (domain is None) == (host is None):
            raise UsageError(f"{table.where}: give domain = ZONE (SRV discovery) or host = NAME (a static KMS host)")
        if domain is not None and domain.strip(".").lower() not in zones:
            raise UsageError(f"{table.where}: domain {domain!r} is served by no [[dns]] of the scenario")
        if host is not None and host not in {h.name for h in hosts}:
            raise UsageError(f"{table.where}: host {host!r} is not a [[host]] of the scenario")
        zone = domain.strip(".").lower() if domain else None
        found.append(
            ClientGroup(
                name=name,
                segment=_segment_of(table, segments),
                count=count,
                products=_product_mix(table),
                domain=zone,
                host=host,
                dns=zones[zone] if zone else None,
                start=table.duration("start", 0.0) or 0.0,
                arrive_over=table.duration("arrive_over", 0.0) or 0.0,
                vm=bool(table.get("vm", False, kind=bool)),
                shared_namespace=bool(table.get("shared_namespace", False, kind=bool)),
                retry_interval=table.duration("retry_interval"),
                renewal_interval=table.duration("renewal_interval"),
                domain_member=bool(table.get("domain_member", False, kind=bool)),
                act_type=_act_type(table),
                **group_mak_fields(table),
            )
        )
        if found[-1].domain_member and (zone is None or zone not in forests):
            raise UsageError(f"{table.where}: domain_member needs domain = the forest of a [[dc]]")
        table.done()
    return found


def _act_type(table: _Table) -> str:
    value = str(table.get("act_type", "any", kind=str)).lower()
    if value not in ("any", "ad", "kms"):
        raise UsageError(f"{table.where}: act_type {value!r}: any, ad or kms (slmgr /act-type 0, 1, 2)")
    return value


def _events(data: dict[str, Any], source: str, parties: dict[str, str], duration: float) -> list[Event]:
    found = []
    for table in _tables(data, "event", source):
        at = table.duration("at")
        if at is None:
            raise UsageError(f'{table.where}: at is missing (when, e.g. at = "3d")')
        if at > duration:
            raise UsageError(f"{table.where}: at {at:g} s is after the end of the run ({duration:g} s)")
        action = str(table.need("do", kind=str))
        if action not in ACTIONS:
            raise UsageError(f"{table.where}: do {action!r}: one of {', '.join(ACTIONS)}")
        target = str(table.need("target", kind=str)).lower()
        kind = parties.get(target)
        wanted = ACTIONS[action]
        server = action in ("stop", "kill", "start") and kind == "dc"  # a DC is stopped and started like a host
        if kind is None or (wanted != "party-or-segment" and kind != wanted and not server):
            raise UsageError(
                f"{table.where}: {action} needs a {wanted.replace('-or-', ' or ')} as target, not {target!r}"
            )
        options = {k: v for k, v in table.data.items() if k not in ("at", "do", "target")}
        allowed = {
            "loss": {"percent"},
            "delay": {"delay", "jitter"},
            "skew": {"offset"},
            "key-change": {"key_groups"},
            "delete-object": {"group"},
            "add-object": {"group"},
            "vamt-acquire": {"via"},
        }
        extra = set(options) - allowed.get(action, set())
        if extra:
            raise UsageError(f"{table.where}: {action} takes no {', '.join(sorted(extra))}")
        if action == "loss" and not (
            isinstance(options.get("percent"), (int, float)) and 0 < options["percent"] <= 100
        ):
            raise UsageError(f"{table.where}: loss needs percent = 1..100")
        if action == "delay":
            parse_duration(options.get("delay", ""), f"{table.where}: delay")
        if action in ("delete-object", "add-object") and not isinstance(options.get("group"), str):
            raise UsageError(f"{table.where}: {action} needs group = a CSVLK group (Windows, Office2016, ...)")
        if action == "vamt-acquire" and parties.get(str(options.get("via", ""))) is None:
            raise UsageError(f"{table.where}: vamt-acquire needs via = a party whose namespace reaches the service")
        if action == "skew":
            text = str(options.get("offset", ""))
            parse_duration(text.lstrip("+-"), f"{table.where}: offset")
        found.append(Event(at, action, target, options))
    return sorted(found, key=lambda e: e.at)


def _expectations(data: dict[str, Any], source: str) -> list[Expectation]:
    found = []
    for n, table in enumerate(_tables(data, "expect", source)):
        kind = str(table.need("kind", kind=str))
        if kind not in EXPECTATION_KINDS:
            raise UsageError(f"{table.where}: kind {kind!r}: one of {', '.join(EXPECTATION_KINDS)}")
        name = str(table.get("name", f"{kind}-{n + 1}", kind=str))
        options = {k: v for k, v in table.data.items() if k not in ("kind", "name")}
        found.append(Expectation(kind, name, options))
    from emu.lab.expect import check_options

    for expectation in found:
        check_options(expectation, source)
    return found


def parse_scenario(text: str, source: str = "scenario") -> Scenario:
    """Check and read a scenario file's text.

    Raises:
        UsageError: not TOML, or anything in it that is not a valid scenario (the message names it).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: not valid TOML: {exc}") from None
    top = _Table(data, source)
    name = top.name()
    clock = _Table(top.need("clock", kind=dict), f"{source}: [clock]")
    scale = clock.need("scale", kind=(int, float))
    from emu.clock import MAX_SCALE, VirtualClock

    if not 1 <= scale <= MAX_SCALE:
        raise UsageError(f"{clock.where}: scale must be 1..{MAX_SCALE:g} virtual seconds per real second")
    duration = clock.duration("duration")
    if duration is None or duration <= 0:
        raise UsageError(f'{clock.where}: duration is missing (e.g. duration = "30d")')
    start = clock.get("start", None, kind=str)
    epoch = VirtualClock.DEFAULT_EPOCH
    if start is not None:
        import datetime as _dt

        try:
            epoch = _dt.datetime.fromisoformat(start).replace(tzinfo=_dt.UTC).timestamp()
        except ValueError:
            raise UsageError(f"{clock.where}: start {start!r}: a date such as 2026-01-01") from None
    clock.done()
    segments = _segments(data, source)
    dns = _dns(data, source, segments)
    dcs = _dcs(data, source, segments, dns)
    actsvcs = parse_actsvcs(data, source, lambda table: _segment_of(table, segments))
    hosts = _hosts(data, source, segments, dns)
    groups = _groups(data, source, segments, dns, hosts, {d.forest for d in dcs})
    check_mak_references(source, actsvcs, hosts, groups)
    names = [d.name for d in dns] + [d.name for d in dcs] + [h.name for h in hosts] + [g.name for g in groups]
    names += [a.name for a in actsvcs]
    names += [s.name for s in segments]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise UsageError(f"{source}: names must be unique across segments, DNS servers, hosts and groups: {doubled}")
    if not hosts and not dcs and not actsvcs:
        raise UsageError(f"{source}: a scenario needs at least one [[host]], [[dc]] or [[actsvc]]")
    if not groups:
        raise UsageError(f"{source}: a scenario needs at least one [[clients]] group")
    parties = {d.name: "dns" for d in dns} | {h.name: "host" for h in hosts} | {g.name: "group" for g in groups}
    parties |= {d.name: "dc" for d in dcs} | {a.name: "actsvc" for a in actsvcs}
    parties |= {s.name: "segment" for s in segments}
    scenario = Scenario(
        name=name,
        title=str(top.get("title", name, kind=str)),
        description=str(top.get("description", "", kind=str)).strip(),
        scale=float(scale),
        duration=duration,
        epoch=epoch,
        segments=segments,
        dns=dns,
        dcs=dcs,
        hosts=tuple(hosts),
        groups=tuple(groups),
        events=tuple(_events(data, source, parties, duration)),
        expectations=tuple(_expectations(data, source)),
        source=text,
        actsvcs=actsvcs,
    )
    for key in ("segment", "dns", "dc", "actsvc", "host", "clients", "event", "expect"):
        top.taken.add(key)
    top.done()
    if scenario.clients > MAX_CLIENTS:
        raise UsageError(f"{source}: {scenario.clients} clients; a run holds at most {MAX_CLIENTS}")
    if scenario.namespaces > MAX_NAMESPACES:
        raise UsageError(
            f"{source}: {scenario.namespaces} namespaces; at most {MAX_NAMESPACES} (put large groups in one "
            "namespace with shared_namespace = true)"
        )
    return scenario


def load_scenario(name_or_path: str) -> Scenario:
    """A scenario from a file, or a bundled one by name (``emu lab list``).

    Raises:
        UsageError: no such file or bundled scenario, or an invalid one.
    """
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            text = path.read_text()
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror}") from None
        return parse_scenario(text, str(path))
    from emu.lab.bundled import bundled_text

    return parse_scenario(bundled_text(name_or_path), name_or_path)
