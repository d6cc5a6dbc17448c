"""kprobekit list: functions with the hooks that reach them, tracepoints with fields, and why not."""

import json

from conftest import cli, requires


def test_functions_by_glob():
    rc, out, err = cli("list", "--json", "inet_rel*")
    assert rc == 0, err
    recs = [json.loads(ln) for ln in out.splitlines()]
    rel = next(r for r in recs if r["function"] == "inet_release")
    assert rel["btf"] is True


@requires("kprobe", "fentry")
def test_hooks_where_the_kernel_has_them():
    rc, out, err = cli("list", "--json", "inet_release")
    rec = json.loads(out)
    assert rec["fentry"] is True and rec["kprobe"] is True
    rc, out, err = cli("list", "inet_release")
    assert out.split()[:3] == ["inet_release", "fentry", "kprobe"]


@requires("tracepoint")
def test_tracepoints_with_fields():
    rc, out, err = cli("list", "--json", "syscalls:sys_enter_bind")
    assert rc == 0, err
    rec = json.loads(out)
    assert rec["tracepoint"] == "syscalls:sys_enter_bind"
    assert [f["name"] for f in rec["fields"]] == ["__syscall_nr", "fd", "umyaddr", "addrlen"]
    rc, out, err = cli("list", "sock/inet_sock_set_state", "--fields")
    lines = out.splitlines()
    assert lines[0] == "sock:inet_sock_set_state"
    assert any(ln.split(";")[0].split()[-1] == "sport" for ln in lines[1:])


def test_unknown_name_explained():
    rc, out, err = cli("list", "inet_relase")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "closest: inet_release" in err and "inlined" in err
