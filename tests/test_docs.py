"""docs/ is emu's own documentation: the error-code page matches emu.hresults, and emu cites only docs/ pages."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: A page name such as ``kms-host.md`` that is not part of a path or URL.
_PAGE = re.compile(r"(?<![\w/.-])([\w-]+\.md)\b")
_DOCS_REF = re.compile(r"docs/([\w-]+\.md)")


def _make_error_codes():
    loader = importlib.machinery.SourceFileLoader("make_error_codes", str(ROOT / "scripts" / "make-error-codes"))
    spec = importlib.util.spec_from_loader("make_error_codes", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _emu_texts():
    for path in sorted((ROOT / "emu").rglob("*")):
        if path.suffix in (".py", ".lua", ".json", ".wsdl", ".toml") and path.is_file():
            yield path, path.read_text(encoding="utf-8")


def test_error_codes_page_is_generated_from_the_one_table():
    page = (DOCS / "error-codes.md").read_text(encoding="utf-8")
    assert page == _make_error_codes().render(), "docs/error-codes.md is stale: run scripts/make-error-codes"


def test_every_code_of_the_table_has_a_section_on_the_page():
    from emu.hresults import ERROR_CODES

    page = (DOCS / "error-codes.md").read_text(encoding="utf-8")
    for entry in ERROR_CODES.values():
        assert f"### {entry.hex} {entry.symbol}\n" in page


def test_emu_cites_only_docs_pages():
    stray = []
    for path, text in _emu_texts():
        for number, line in enumerate(text.splitlines(), 1):
            for match in _PAGE.finditer(line):
                if not line[: match.start()].endswith("docs/"):
                    stray.append(f"{path.relative_to(ROOT)}:{number}: {match.group(1)}")
    assert stray == []


def test_every_docs_page_emu_cites_exists():
    missing = sorted(
        {
            f"{path.relative_to(ROOT)}: docs/{name}"
            for path, text in _emu_texts()
            for name in _DOCS_REF.findall(text)
            if not (DOCS / name).is_file()
        }
    )
    assert missing == []


def test_every_page_linked_from_the_docs_index_exists():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([\w-]+\.md)\)", index)
    assert len(links) >= 10
    assert [link for link in links if not (DOCS / link).is_file()] == []


def test_docs_do_not_cite_the_team_notes():
    for page in DOCS.glob("*.md"):
        text = page.read_text(encoding="utf-8")
        assert "/work/shared" not in text and "shared/spec" not in text, page.name
