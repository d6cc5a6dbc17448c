"""Smoke test of the VM harness itself: `run.py --tests tests/vm/guest_smoke.py`.

Named so that `pytest tests` does not collect it: on the host it would fail.
"""
import os
import subprocess
from pathlib import Path

import pytest


def test_proc_version_matches_uname():
    release = subprocess.run(["uname", "-r"], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert release.startswith(("6.1.", "6.12."))
    assert release in Path("/proc/version").read_text()


def test_kprobe_pmu_exists():
    assert Path("/sys/bus/event_source/devices/kprobe").is_dir()


@pytest.mark.parametrize("fs", ["tracefs", "bpf", "securityfs"])
def test_guest_mounts(fs):
    mounted = {line.split()[2] for line in Path("/proc/mounts").read_text().splitlines()}
    assert fs in mounted


def test_scratch_space_writable():
    tmp = Path(os.environ["TMPDIR"])
    (tmp / "probe").write_text("ok")
    assert (tmp / "probe").read_text() == "ok"


TRACING = Path("/sys/kernel/tracing")


@pytest.mark.parametrize("backend", ["kprobe", "tracepoint"])
def test_backend_usable(backend):
    """Minimal use of each backend through tracefs; also feeds the summary."""
    if backend == "tracepoint":
        assert (TRACING / "events/syscalls/sys_enter_openat/id").read_text().strip().isdigit()
        return
    def kprobe_events(line):  # O_APPEND without Python's seek, which tracefs refuses
        fd = os.open(TRACING / "kprobe_events", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    kprobe_events("p:kpk_smoke do_sys_openat2\n")
    try:
        assert (TRACING / "events/kprobes/kpk_smoke/id").exists()
    finally:
        kprobe_events("-:kpk_smoke\n")
