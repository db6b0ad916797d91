"""The layering rules of the brief, enforced: imports point down only; the core does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "emu"

#: Layer of each top-level part of the package (lower may not import higher).
LAYERS = {
    "errors": 0,
    "clock": 0,
    "rng": 0,
    "hresults": 0,
    "durations": 0,
    "wire": 1,
    # sans-IO protocol packages: bytes and time in, bytes and decisions out
    "rpc": 2,
    "kms": 2,
    "dns": 2,
    "ldap": 2,
    "adba": 2,
    "mak": 2,
    # above the protocol packages, below I/O: the client's order of activation paths (layer "2.5")
    "activation": 2,
    # I/O: sockets and servers; then captures, decode and replay (which drive the servers)
    "net": 3,
    "pcap": 4,
    # whole networks: in one process on loopback (sim), in namespaces (lab)
    "sim": 5,
    "lab": 5,
    "load": 5,
    "conform": 5,
    "cli": 6,
    "__main__": 6,
}
#: Layer-2 packages built on another layer-2 package (everything else on layer 2 is mutually independent):
#: the AD directory and the ADBA rules speak LDAP through emu.ldap's messages; emu.activation orders the
#: client's paths (ADBA, KMS, DNS discovery; MAK later) and so sits above them.
BUILT_ON = {
    ("adba", "ldap"),
    ("activation", "kms"),
    ("activation", "adba"),
    ("activation", "dns"),
    ("activation", "mak"),
}
#: Modules core code (layers 1-2) must not import: sockets, event loops, packets, processes, time, entropy.
FORBIDDEN_IN_CORE = {
    "socket",
    "asyncio",
    "scapy",
    "subprocess",
    "time",
    "random",
    "secrets",
    "selectors",
    "threading",
    "sqlite3",
    "pyroute2",
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        part = rel.parts[0].removesuffix(".py")
        if part == "__init__":
            continue
        yield path, part


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr == "urandom"
        ):
            yield node.lineno, "os.urandom"


def test_every_part_of_the_package_has_a_layer():
    unknown = {part for _, part in _modules()} - set(LAYERS)
    assert not unknown, f"give these a layer in LAYERS: {unknown}"


@pytest.mark.parametrize(
    "path,part", list(_modules()), ids=lambda v: str(v).split("emu/")[-1] if isinstance(v, Path) else v
)
def test_imports_point_down_only(path: Path, part: str):
    layer = LAYERS[part]
    problems = []
    for lineno, name in _imports(path):
        pieces = name.split(".")
        if pieces[0] == "emu" and len(pieces) > 1 and pieces[1] in LAYERS:
            target = pieces[1]
            if target == part:
                continue
            same_layer_2 = LAYERS[target] == layer == 2 and (part, target) not in BUILT_ON
            if LAYERS[target] > layer or same_layer_2:
                problems.append(f"line {lineno}: {part} (layer {layer}) imports emu.{target} (layer {LAYERS[target]})")
        if 1 <= layer <= 2 and (pieces[0] in FORBIDDEN_IN_CORE or name == "os.urandom"):
            problems.append(f"line {lineno}: core module imports {name}: take it as an argument instead")
    assert not problems, "\n".join(problems)


def test_tests_import_shared_helpers_from_modules_not_conftest():
    """Several conftest modules exist (tests/, tests/dns/); importing one by name shadows the other."""
    tests = Path(__file__).resolve().parent
    needle = "from " + "conftest import"
    offenders = [str(p.relative_to(tests)) for p in tests.rglob("*.py") if needle in p.read_text()]
    assert not offenders, f"import helpers from emu_testing (or dns_testing) instead: {offenders}"
