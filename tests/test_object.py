"""The loader's Python objects on the real kernel: object, programs, maps, globals, links."""

import os

import pytest

from conftest import bpf_ids, kernel
from kprobekit import errors
from kprobekit.object import Object


@pytest.fixture
def loaded():
    with Object.open("tcpconnect") as obj:
        obj.set_autoload(["tp_set_state"])
        obj.rodata["filter_pid"] = os.getpid()
        obj.load()
        yield obj


@kernel
def test_hash_map_is_a_mapping(loaded):
    m = loaded.map("connecting")      # u32 thread id -> struct call {sk, uaddr}
    m.clear()
    m[7] = (0x1000, 0x1001)
    m[8] = (0x2000, 0x2001)
    assert m[7].sk == 0x1000 and m[7].uaddr == 0x1001
    assert m.get(9) is None and 8 in m and 9 not in m
    assert sorted(m) == [7, 8] and sorted(m.items()) == [(7, (0x1000, 0x1001)), (8, (0x2000, 0x2001))]
    assert len(m) == 2
    del m[7]
    assert list(m) == [8]
    with pytest.raises(KeyError):
        del m[7]
    m.clear()
    assert len(m) == 0


@kernel
def test_percpu_values_are_lists_of_records(loaded):
    from kprobekit._libbpf import lib
    m = loaded.map("kk_scratch")
    vals = m[0]
    assert len(vals) == lib.libbpf_num_possible_cpus()
    assert all(v.pid == 0 and v.comm == "" for v in vals)


@kernel
def test_struct_valued_hash_map(loaded):
    m = loaded.map("syn_sent")
    assert len(m) == 0


@kernel
def test_globals_before_and_after_load(loaded):
    assert loaded.rodata["filter_pid"] == os.getpid()      # frozen, read back from the kernel map
    assert loaded.bss["kk_lost"] == 0
    with pytest.raises(errors.NotFound, match="has: kk_lost"):
        loaded.bss["nope"]


@kernel
def test_close_detaches_and_unloads():
    before = bpf_ids()
    obj = Object.open("tcpconnect")
    obj.set_autoload(["tp_set_state"])
    obj.load()
    links = obj.attach()
    assert len(links) == 1 and links[0].fd >= 0
    during = bpf_ids()
    assert during[0] - before[0] and during[1] - before[1]
    obj.close()
    obj.close()     # idempotent
    import time
    for _ in range(50):
        after = bpf_ids()
        if not ((during[0] - before[0]) & after[0]):
            break
        time.sleep(0.1)
    assert not (during[0] - before[0]) & after[0]
    assert not (during[1] - before[1]) & after[1]


def test_unknown_names_list_what_exists():
    with Object.open("tcpconnect") as obj:
        with pytest.raises(errors.NotFound, match="has: .*tp_set_state"):
            obj.program("nope")
        with pytest.raises(errors.NotFound, match="has: .*connecting, connects, events"):
            obj.map("nope")
        with pytest.raises(errors.NotFound):
            obj.set_autoload(["nope"])


def test_missing_object_file():
    with pytest.raises(errors.NotFound, match="no such BPF object"):
        Object.open("/nonexistent/x.bpf.o")
