"""The shared field codecs of emu.wire.common against the standard library's definitions."""

from __future__ import annotations

import pickle
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.wire.common import guid_from_bytes_le, split_fixed_utf16


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_guid_from_wire_bytes_equals_uuid_bytes_le(raw):
    fast = guid_from_bytes_le(raw)
    slow = uuid.UUID(bytes_le=raw)
    assert fast == slow and hash(fast) == hash(slow) and str(fast) == str(slow)
    assert fast.bytes_le == raw and fast.is_safe is slow.is_safe
    assert pickle.loads(pickle.dumps(fast)) == slow
    assert guid_from_bytes_le(bytearray(raw)) == slow


@pytest.mark.parametrize("size", [0, 15, 17])
def test_guid_of_the_wrong_size_is_refused(size):
    with pytest.raises(ValueError, match="16 bytes"):
        guid_from_bytes_le(bytes(size))


def _split_by_characters(raw: bytes) -> tuple[str, bytes]:
    """The definition: the text ends at the first UTF-16 code unit that is zero."""
    end = len(raw) - len(raw) % 2
    for i in range(0, end, 2):
        if raw[i : i + 2] == b"\0\0":
            return raw[:i].decode("utf-16-le", "surrogatepass"), raw[i + 2 :].rstrip(b"\0")
    return raw[:end].decode("utf-16-le", "surrogatepass"), raw[end:]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"\0", b"A", b"\x01", b"\xd8", b"\0\0"]), max_size=40).map(b"".join))
def test_fixed_utf16_splits_at_the_first_nul_character_not_a_straddling_pair(raw):
    assert split_fixed_utf16(raw) == _split_by_characters(raw)


def test_a_nul_pair_across_two_characters_is_not_the_end_of_the_text():
    assert split_fixed_utf16(b"A\0\0B\0\0") == ("A\u4200", b"")
