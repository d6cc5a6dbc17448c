"""`kprobekit features` tells the truth about the running kernel."""

import json
import os

import pytest

from conftest import cli, kernel
from kprobekit import features, kernel as kk


@kernel
def test_features_json_keys_and_types():
    rc, out, err = cli("features", "--json")
    assert rc == 0, err
    report = json.loads(out)
    bools = ["btf", "kprobe", "kretprobe", "fentry", "fexit", "tracepoint", "tp_btf", "raw_tp",
             "ringbuf", "perfbuf", "tracefs"]
    assert sorted(report) == sorted(bools + ["lockdown", "capabilities"])
    assert all(isinstance(report[k], bool) for k in bools)
    assert report["lockdown"] in ("none", "integrity", "confidentiality", "unknown")
    assert set(report["capabilities"]) <= {"CAP_SYS_ADMIN", "CAP_PERFMON", "CAP_BPF"}


@kernel
def test_features_match_the_kernel():
    rc, out, err = cli("features", "--json")
    report = json.loads(out)
    assert report["btf"] == os.path.exists("/sys/kernel/btf/vmlinux")
    has_kprobe_mechanism = os.path.exists(kk.KPROBE_PMU) or kk.kprobe_events() is not None
    if not has_kprobe_mechanism:
        assert report["kprobe"] is False and report["kretprobe"] is False
    # tracefs gets mounted by probing when root
    assert report["tracefs"] and os.path.isdir(kk.tracefs(mount=False) + "/events")
    assert report["tracepoint"] is True
    assert report["capabilities"] == ["CAP_SYS_ADMIN", "CAP_PERFMON", "CAP_BPF"]


@kernel
def test_probing_leaves_nothing_attached():
    from conftest import bpf_ids
    before = bpf_ids()
    features.forget()
    features.report()
    features.release()
    import time
    for _ in range(50):
        after = bpf_ids()
        if not (after[0] - before[0]) and not (after[1] - before[1]):
            break
        time.sleep(0.1)
    assert not (after[0] - before[0]) and not (after[1] - before[1])


def test_features_text_table():
    rc, out, err = cli("features")
    if os.geteuid() != 0:
        return
    names = [line.split()[0] for line in out.splitlines()]
    assert names[:3] == ["btf", "kprobe", "kretprobe"] and "lockdown" in names


@pytest.mark.unit
def test_bad_argument_is_one_line():
    rc, out, err = cli("features", "--bogus")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("kprobekit features: ")


# Debian's stock kernels, which tests/vm/run.py boots, have kprobes and fentry.
STOCK_DEBIAN = os.uname().release.endswith("-amd64")


@kernel
@pytest.mark.skipif(not STOCK_DEBIAN, reason="not a Debian stock kernel (the VM matrix runs those)")
def test_stock_kernel_reports_kprobes_and_fentry():
    rc, out, err = cli("features", "--json")
    report = json.loads(out)
    assert rc == 0 and all(report[k] for k in ("kprobe", "kretprobe", "fentry", "fexit")), report
