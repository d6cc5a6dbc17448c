"""What needs no kernel: BTF layouts of the shipped objects, record decoding, argument parsing."""

import argparse
import ipaddress
import struct

import pytest

from kprobekit.btf import BTF, Errno
from kprobekit.cli.runner import pid_arg, port_list, uid_arg
from kprobekit.object import object_path

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tcpconnect_event():
    with BTF.from_file(object_path("tcpconnect")) as btf:
        yield btf.layout(btf.find("event", 4))


def test_layout_from_btf(tcpconnect_event):
    lay = tcpconnect_event
    offsets = {f.name: (f.offset, f.size) for f in lay.fields}
    assert offsets["saddr"] == (0, 16) and offsets["daddr"] == (16, 16)
    assert offsets["ts_ns"] == (32, 8)
    assert offsets["sport"][1] == 2 and offsets["comm"][1] == 16
    assert lay.struct.size == lay.size


def test_record_decoding(tcpconnect_event):
    lay = tcpconnect_event
    values = {f.name: 0 for f in lay.fields}
    values.update(saddr=bytes([10, 0, 0, 1]) + bytes(12), daddr=ipaddress.IPv6Address("::1").packed,
                  pid=42, sport=1234, dport=80, ip=4, comm=b"curl\0junk".ljust(16, b"\0"))
    raw = lay.struct.pack(*(values[f.name] for f in lay.fields))
    rec = lay.record(lay.struct.unpack(raw))
    assert rec.saddr == ipaddress.IPv4Address("10.0.0.1")
    assert rec.comm == "curl" and rec.pid == 42 and rec.dport == 80
    assert rec._asdict()["sport"] == 1234


def test_ipv6_record(tcpconnect_event):
    lay = tcpconnect_event
    values = {f.name: 0 for f in lay.fields}
    values.update(saddr=ipaddress.IPv6Address("fe80::1").packed, daddr=bytes(16), ip=6, comm=b"x")
    rec = lay.record(lay.struct.unpack(lay.struct.pack(*(values[f.name] for f in lay.fields))))
    assert rec.saddr == ipaddress.IPv6Address("fe80::1") and rec.ip == 6


def test_errno_names():
    assert Errno(-98).name == "EADDRINUSE" and Errno(0).name is None and Errno(-13) == -13


def test_rodata_layout_from_btf():
    with BTF.from_file(object_path("tcpconnect")) as btf:
        sec = btf.datasec(".rodata")
    assert {"filter_pid", "filter_ports", "filter_family", "kk_perfbuf"} <= set(sec)
    off, size, _ = sec["filter_ports"]
    assert size == 32


@pytest.mark.parametrize("text,ports", [("80", [80]), ("80,443", [80, 443]), ("65535", [65535])])
def test_ports_ok(text, ports):
    assert port_list(text) == ports


@pytest.mark.parametrize("text", ["0", "65536", "http", "80,", ",".join(["1"] * 17)])
def test_ports_bad(text):
    with pytest.raises(argparse.ArgumentTypeError):
        port_list(text)


@pytest.mark.parametrize("text", ["0", "-1", "x", "99999999"])
def test_pid_bad(text):
    with pytest.raises(argparse.ArgumentTypeError):
        pid_arg(text)


def test_pid_and_uid_ok():
    import os
    assert pid_arg(str(os.getpid())) == os.getpid()
    assert uid_arg("1000") == 1000
    with pytest.raises(argparse.ArgumentTypeError):
        uid_arg("-5")


def test_struct_format_has_no_gaps(tcpconnect_event):
    assert struct.calcsize(tcpconnect_event.format) == tcpconnect_event.size
