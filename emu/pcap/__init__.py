"""Captures: pcap reading and writing, TCP conversation tracking, decode, live capture, replay and the Scapy layers."""
