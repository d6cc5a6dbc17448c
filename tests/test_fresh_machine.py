"""A machine nobody prepared: nothing mounted but what boot mounts, the user's own Python, no root.

Each test that needs a just-booted machine runs kprobekit in a private mount namespace where
tracefs, debugfs and securityfs are unmounted and /run/kprobekit is empty (conftest.JUST_BOOTED):
kprobekit must mount what it needs itself.  In the VM matrix the guest mounts none of them either.
"""

import glob
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import JUST_BOOTED, bpf_ids, cli, kernel, requires

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = ("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups")
# Hooks whose answer needs a test program loaded (the rest are files anyone may read).
PROBED = ["kprobe", "kretprobe", "fentry", "fexit", "tracepoint", "tp_btf", "raw_tp", "ringbuf", "perfbuf"]


@kernel
def test_features_mounts_what_it_needs():
    rc, out, err = cli("features", "--json")
    assert rc == 0, err
    host = json.loads(out)
    rc, out, err = cli("features", "--json", prefix=JUST_BOOTED)
    assert rc == 0, err
    fresh = json.loads(out)
    # the same truth as where everything is mounted: tracefs and securityfs were mounted by kprobekit
    assert fresh == host
    assert fresh["tracefs"] is True and fresh["tracepoint"] is True
    assert fresh["lockdown"] != "unknown"


@kernel
def test_features_text_mounts_what_it_needs():
    rc, out, err = cli("features", prefix=JUST_BOOTED)
    assert rc == 0 and err == "", err
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert rows["tracefs"] == "yes" and rows["tracepoint"] == "yes"


@kernel
def test_a_failed_mount_is_one_line_in_features():
    # a user namespace may not mount tracefs or securityfs: mount(2) fails for real there
    inner = ("unshare", "--user", "--map-root-user", "--")
    rc, out, err = cli("features", prefix=JUST_BOOTED + inner)
    assert rc == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert re.fullmatch(r"tracefs +no +tracefs is not mounted and mounting it at /sys/kernel/tracing failed: "
                        r"Operation not permitted", rows["tracefs"]), rows["tracefs"]
    assert re.fullmatch(r"lockdown +unknown +securityfs is not mounted and mounting it at /sys/kernel/security "
                        r"failed: Operation not permitted", rows["lockdown"]), rows["lockdown"]
    assert "Traceback" not in err


@requires("tracepoint")
def test_tcpconnect_on_a_just_booted_machine(run_tool):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        tool = run_tool("tcpconnect", "--json", "-P", str(port), prefix=JUST_BOOTED)
        with socket.create_connection(("127.0.0.1", port)) as c:
            sport = c.getsockname()[1]
            server.accept()[0].close()
        recs, err, rc = tool.stop()
    assert rc == 0, err
    assert [(r["pid"], r["saddr"], r["sport"], r["daddr"], r["dport"]) for r in recs] == \
        [(os.getpid(), "127.0.0.1", sport, "127.0.0.1", port)]


@requires("tracepoint")
def test_trace_tracepoint_on_a_just_booted_machine(run_tool):
    tool = run_tool("trace", "--json", "-p", str(os.getpid()), "t:syscalls/sys_enter_bind addrlen",
                    prefix=JUST_BOOTED)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
    recs, err, rc = tool.stop()
    assert rc == 0, err
    assert [(r["event"], r["pid"], r["args"]) for r in recs] == \
        [("syscalls:sys_enter_bind", os.getpid(), {"addrlen": 16})]


def _first_run_command():
    """The first program of docs/library.md and the command that runs it, as the page gives them."""
    with open(os.path.join(REPO, "docs", "library.md")) as f:
        text = f.read()
    step1 = text[text.index("### 1. "):]
    program = re.search(r"```python\n(.*?)```", step1, re.S).group(1)
    command = re.search(r"and run it, as root: `([^`]+)`", text).group(1)
    return program, command


@requires("tracepoint")
def test_the_docs_first_program_runs_verbatim_on_a_just_booted_machine(tmp_path):
    """After `make setup`, step 1 of docs/library.md (bpf_printk through trace_pipe, which needs
    tracefs) works as written, with the interpreter the page names."""
    program, command = _first_run_command()
    (tmp_path / "opensnoop.py").write_text(program)
    env = dict(os.environ, KPROBEKIT_CACHE=str(tmp_path / "cache"))
    # a session of its own: Ctrl-C reaches the whole process group, as from a terminal
    proc = subprocess.Popen([*JUST_BOOTED, "sh", "-c", command], cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wanted = f"openat by {os.getpid()}"
        deadline = time.monotonic() + 120
        seen = False
        while not seen and time.monotonic() < deadline and proc.poll() is None:
            with open(tmp_path / "opened", "w"):
                pass
            if select.select([proc.stdout], [], [], 0.2)[0]:
                seen = wanted in proc.stdout.readline()
        assert seen, proc.stderr.read() if proc.poll() is not None else "no line in time"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=60)


# --- the user's own Python ---

def _other_python():
    """The oldest supported interpreter that is not the one `make setup` used, else Debian's."""
    setup_python = os.path.realpath("/usr/bin/python3")
    candidates = sorted(glob.glob("/root/.pyenv/versions/3.*/bin/python3") +
                        glob.glob("/usr/local/bin/python3.*") + glob.glob("/usr/bin/python3.*"))
    for path in sorted(candidates, key=lambda p: [int(x) for x in re.findall(r"3\.(\d+)", p)[-1:]] or [99]):
        if not os.access(path, os.X_OK) or os.path.realpath(path) == setup_python or path.endswith("-config"):
            continue
        minor = subprocess.run([path, "-c", "import sys; print(sys.version_info[1])"],
                               capture_output=True, text=True)
        if minor.returncode == 0 and int(minor.stdout) >= 9 and subprocess.run(
                [path, "-c", "import venv, ensurepip"], capture_output=True).returncode == 0:
            return path
    return "/usr/bin/python3"


@pytest.mark.host
@requires("tracepoint")
def test_wheel_installs_into_another_python(tmp_path):
    rc = subprocess.run(["make", "-s", "wheel"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rc.returncode == 0, rc.stdout + rc.stderr
    wheels = glob.glob(os.path.join(REPO, "dist", "kprobekit-*-py3-none-any.whl"))
    assert len(wheels) == 1, wheels
    python = _other_python()
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", wheels[0]], capture_output=True, text=True,
                         timeout=600)
    assert pip.returncode == 0, pip.stderr
    # the command, from the venv's console script
    feats = subprocess.run([str(venv / "bin" / "kprobekit"), "features", "--json"], capture_output=True,
                           text=True, timeout=120)
    assert feats.returncode == 0, feats.stderr
    assert json.loads(feats.stdout)["tracepoint"] is True
    # an example, compiled at run time against the headers inside the wheel, imported from the venv
    env = dict(os.environ, KPROBEKIT_CACHE=str(tmp_path / "cache"))
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen([str(venv / "bin" / "python"), os.path.join(REPO, "examples", "opensnoop.py"),
                             "-p", str(os.getpid())], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        header = proc.stdout.readline()
        assert header.split() == ["PID", "COMM", "PATH"], proc.stderr.read()
        path = tmp_path / "opened-by-the-test"
        with open(path, "w"):
            pass
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"{os.getpid()} " in out and str(path) in out, out
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import kprobekit; print(kprobekit.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert where.stdout.startswith(str(venv)), where.stdout


# --- no privileges ---

def test_features_without_privileges_blames_privileges():
    rc, out, err = cli("features", "--json", prefix=NOBODY)
    assert rc == 0, err
    report = json.loads(out)
    # unknown, not "the kernel lacks it"
    assert all(report[name] is None for name in PROBED), report
    assert report["btf"] is os.path.exists("/sys/kernel/btf/vmlinux")
    assert report["capabilities"] == []
    rc, out, err = cli("features", prefix=NOBODY)
    assert rc == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()}
    for name in PROBED:
        assert re.fullmatch(rf"{name} +\? +cannot tell: probing needs privileges — run as root .*", rows[name])
    assert "requires Linux" not in out and "not supported" not in out
    assert re.fullmatch(r"tracefs +no +tracefs .*(needs root|run as root).*", rows["tracefs"]), rows["tracefs"]


def test_tools_without_privileges_say_so():
    rc, out, err = cli("tcpconnect", prefix=NOBODY)
    assert rc == 2 and err.strip().startswith("kprobekit tcpconnect: load BPF programs: missing privileges — run as root")
    assert len(err.strip().splitlines()) == 1


# --- output that cannot be written ---

def _full(*argv, timeout=60, stdout="/dev/full", make_events=None):
    """Runs kprobekit with stdout on stdout; (exit code, stderr)."""
    with open(stdout, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kprobekit.cli.main", *argv], stdout=out,
                                stderr=subprocess.PIPE, text=True)
    if make_events:
        while proc.poll() is None:
            make_events()
            time.sleep(0.1)
    err = proc.communicate(timeout=timeout)[1]
    return proc.returncode, err


@pytest.mark.parametrize("argv", [("features",), ("features", "--json"), ("tcpstates", "--help"), ("list", "tcp_v4_c*")],
                         ids=["features", "features-json", "help", "list"])
def test_disk_full_is_one_line(argv):
    rc, err = _full(*argv)
    assert rc == 2, err
    assert err.endswith(": write output: No space left on device\n") and len(err.splitlines()) == 1, err


def _loopback_connect():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()):
            pass


@requires("tracepoint")
@pytest.mark.parametrize("mode", ["text", "json"])
def test_tool_with_full_disk_stops_with_one_line_and_detaches(mode):
    before = bpf_ids()
    argv = ["tcpstates"] + (["--json"] if mode == "json" else [])
    rc, err = _full(*argv, make_events=_loopback_connect)
    assert rc == 2, err
    lines = err.splitlines()
    assert lines[0].startswith("kprobekit: using ")
    assert lines[1:] == ["kprobekit tcpstates: write output: No space left on device"], err
    for _ in range(50):
        progs, links = bpf_ids()
        if not (progs - before[0]) and not (links - before[1]):
            break
        time.sleep(0.1)
    assert not (progs - before[0]) and not (links - before[1])


@requires("tracepoint")
def test_closed_pipe_exits_quietly():
    proc = subprocess.Popen(f"{sys.executable} -m kprobekit.cli.main tcpstates | head -1", shell=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        _loopback_connect()
        time.sleep(0.1)
    out, err = proc.communicate(timeout=60)
    assert out.split()[:2] == ["SKADDR", "PID"]
    assert "Traceback" not in err and "Error" not in err, err


def test_closed_stdout_is_one_line():
    p = subprocess.run(f"{sys.executable} -m kprobekit.cli.main features >&-", shell=True,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr == "kprobekit: standard output is closed — redirect it (e.g. > FILE or > /dev/null) " \
                       "instead of closing it\n"


def test_closed_stderr_still_works():
    p = subprocess.run(f"{sys.executable} -m kprobekit.cli.main features --json 2>&-", shell=True,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    assert "btf" in json.loads(p.stdout)
    p = subprocess.run(f"{sys.executable} -m kprobekit.cli.main tcpconnect --bogus 2>&-", shell=True,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stdout == ""
