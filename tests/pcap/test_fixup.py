"""emu.pcap.fixup: loopback de-duplication and checksum repair on loopback only, one implementation
for ``emu capture`` and ``client --capture``."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from emu.pcap.fixup import FrameFixup
from emu.pcap.sniff import TcpCapture


def _frame(chksum: int = 0xDEAD) -> Ether:
    pkt = Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=50000, dport=1688, flags="PA", chksum=chksum)
    frame = pkt.__class__(bytes(pkt / b"kms"))
    frame.time = 1_800_000_000.0
    return frame


def test_loopback_drops_the_second_copy_and_repairs_checksums():
    fixup = FrameFixup(loopback=True)
    first = fixup.apply(_frame())
    assert first is not None and fixup.apply(_frame()) is None and fixup.duplicates == 1
    assert first[TCP].chksum != 0xDEAD
    assert first[TCP].chksum == TCP(bytes(first[TCP]))[TCP].chksum  # valid once rebuilt


def test_other_interfaces_keep_retransmissions_and_the_checksums_as_captured():
    fixup = FrameFixup(loopback=False)
    frames = [fixup.apply(_frame()), fixup.apply(_frame())]
    assert all(f is not None and f[TCP].chksum == 0xDEAD for f in frames)
    assert fixup.duplicates == 0


def test_client_capture_on_a_real_interface_writes_frames_exactly_as_captured(tmp_path: Path):
    capture = TcpCapture()
    capture._interface = "eth0"
    capture._frames = [_frame(), _frame()]
    path = tmp_path / "out.pcap"
    assert capture.write(str(path), [50000]) == 2
    assert [bytes(f) for f in rdpcap(str(path))] == [bytes(_frame()), bytes(_frame())]


def test_client_capture_on_loopback_writes_one_copy_with_good_checksums(tmp_path: Path):
    capture = TcpCapture()
    capture._interface = "lo"
    capture._frames = [_frame(), _frame()]
    path = tmp_path / "out.pcap"
    assert capture.write(str(path), [50000]) == 1
    (frame,) = rdpcap(str(path))
    assert frame[TCP].chksum != 0xDEAD
