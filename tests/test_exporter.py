"""kprobekit exporter: metrics counted in the kernel, scraped directly and by a real Prometheus server.

Traffic is made inside a fresh network namespace and the exporter counts
that namespace only (--netns), so the counts are exact even while other
programs on the machine make connections (and Prometheus' own scrapes are
not counted).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from kprobekit import features
from conftest import bpf_ids, cli, in_netns, kernel, requires

from prometheus_client.parser import text_string_to_metric_families

N_OK, N_REFUSED = 5, 3

# Inside the namespace: a listener and a closed port; on "go", N_OK connects that are accepted and
# exchange 100 bytes each way, then N_REFUSED refused ones; prints "done".
TRAFFIC = f"""
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(64)
closed = socket.socket(); closed.bind(("127.0.0.1", 0)); cport = closed.getsockname()[1]; closed.close()
print(srv.getsockname()[1], cport, flush=True)
sys.stdin.readline()
for _ in range({N_OK}):
    c = socket.create_connection(("127.0.0.1", srv.getsockname()[1]))
    a, _ = srv.accept()
    c.sendall(b"x" * 100); a.recv(100); a.sendall(b"y" * 100); c.recv(100)
    c.close(); a.close()
for _ in range({N_REFUSED}):
    try:
        socket.create_connection(("127.0.0.1", cport))
    except ConnectionRefusedError:
        pass
print("done", flush=True)
sys.stdin.readline()
"""


class Exporter:
    """A running `kprobekit exporter`, ready once it says where it serves."""

    def __init__(self, *argv):
        self.argv = [sys.executable, "-m", "kprobekit.cli.main", "exporter", "--listen", "127.0.0.1:0", *argv]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        while True:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"exporter exited {self.proc.wait()} before serving:\n" + "".join(self.lines))
            self.lines.append(line)
            if line.startswith("kprobekit: serving http://"):
                self.url = line.split()[2]
                self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
                return

    def scrape(self):
        """{(name, frozenset(labels)): value} of every sample."""
        with urllib.request.urlopen(self.url, timeout=10) as r:
            text = r.read().decode()
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, "".join(self.lines) + err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def exporter():
    started = []

    def start(*argv):
        e = Exporter(*argv)
        started.append(e)
        return e

    yield start
    for e in started:
        e.kill()


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0)


def traffic(ns_name):
    child = in_netns(ns_name, TRAFFIC)
    port, closed_port = map(int, child.stdout.readline().split())
    return child, port, closed_port


def run_traffic(child):
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "done"


def wait_for(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


BACKENDS = [pytest.param("auto", marks=kernel, id="auto"),
            pytest.param("fentry", marks=requires("fentry", "fexit"), id="fentry"),
            pytest.param("kprobe", marks=requires("kprobe", "kretprobe"), id="kprobe"),
            pytest.param("tracepoint", marks=requires("tracepoint"), id="tracepoint")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_metrics(exporter, netns, backend):
    ns_name, inode = netns
    exp = exporter("--netns", str(inode), "--backend", backend)
    child, port, closed_port = traffic(ns_name)
    try:
        before = exp.scrape()
        assert value(before, "kprobekit_tcp_connects_total", family="ipv4", result="ok") == 0
        run_traffic(child)

        def settled():
            s = exp.scrape()
            # the last FIN/ACKs close the sessions just after the child's last call
            return s if value(s, "kprobekit_tcp_session_duration_seconds_count") >= 2 * N_OK + N_REFUSED else None
        s = wait_for(settled) or exp.scrape()
    finally:
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=30)
    info = {dict(k[1])["tool"]: dict(k[1])["backend"] for k in s if k[0] == "kprobekit_backend_info"}
    assert set(info) == {"tcpconnect", "tcpaccept", "tcpstates", "tcplife", "bindsnoop", "solisten"}
    if backend != "auto":
        assert info["tcpconnect"] == info["tcpaccept"] == info["bindsnoop"] == info["solisten"] == backend
    assert value(s, "kprobekit_tcp_connects_total", family="ipv4", result="ok") == N_OK
    assert value(s, "kprobekit_tcp_connects_total", family="ipv4", result="ECONNREFUSED") == N_REFUSED
    assert value(s, "kprobekit_tcp_connect_latency_seconds_count") == N_OK
    assert 0 < value(s, "kprobekit_tcp_connect_latency_seconds_sum") < 10
    assert value(s, "kprobekit_tcp_connect_latency_seconds_bucket", le="+Inf") == N_OK
    assert value(s, "kprobekit_tcp_accepts_total", family="ipv4", port=str(port)) == N_OK
    assert value(s, "kprobekit_tcp_state_transitions_total", **{"from": "CLOSE", "to": "SYN_SENT"}) \
        == N_OK + N_REFUSED
    assert value(s, "kprobekit_tcp_state_transitions_total", **{"from": "SYN_SENT", "to": "ESTABLISHED"}) == N_OK
    assert value(s, "kprobekit_tcp_state_transitions_total", **{"from": "SYN_SENT", "to": "CLOSE"}) == N_REFUSED
    assert value(s, "kprobekit_tcp_state_transitions_total", **{"from": "CLOSE", "to": "LISTEN"}) == 1
    # every accepted connect closes two sessions (both ends), every refused one its client's
    assert value(s, "kprobekit_tcp_session_duration_seconds_count") == 2 * N_OK + N_REFUSED
    # tcp_sock's bytes_acked/bytes_received: the 100 bytes each way, plus at most SYN and FIN per socket
    sockets = 2 * N_OK + N_REFUSED
    for direction in ("tx", "rx"):
        n = value(s, "kprobekit_tcp_session_bytes_total", direction=direction)
        assert 2 * 100 * N_OK <= n <= 2 * 100 * N_OK + 2 * sockets, (direction, n)
    # bind() of the listener and of the port closed again; listen() of the listener
    assert value(s, "kprobekit_binds_total", protocol="tcp", result="ok") == 2
    assert value(s, "kprobekit_listens_total") == 1
    assert value(s, "kprobekit_events_lost_total") == 0
    assert all(value(s, "kprobekit_programs_loaded", tool=t) >= 1 for t in info)
    code, err = exp.stop()
    assert code == 0, err


@kernel
def test_clean_exit_on_signals(exporter):
    for sig in (signal.SIGINT, signal.SIGTERM):
        before_progs, before_links = bpf_ids()
        exp = exporter()
        during_progs, during_links = bpf_ids()
        ours = (during_progs - before_progs, during_links - before_links)
        assert ours[0] and ours[1]
        code, err = exp.stop(sig)
        assert code == 0, err
        assert "Traceback" not in err
        for _ in range(50):
            after_progs, after_links = bpf_ids()
            if not (ours[0] & after_progs or ours[1] & after_links):
                break
            time.sleep(0.1)
        assert not ours[0] & after_progs
        assert not ours[1] & after_links


@pytest.mark.host      # no kernel difference to find: the VM matrix runs the backends' tests
@kernel
def test_default_listen_address():
    """With no arguments: 127.0.0.1:9435, said on stderr (skipped if something else holds the port)."""
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # as the exporter's server does
    try:
        probe.bind(("127.0.0.1", 9435))
    except OSError:
        pytest.skip("127.0.0.1:9435 is in use by another process")
    finally:
        probe.close()
    p = subprocess.Popen([sys.executable, "-m", "kprobekit.cli.main", "exporter"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        assert line.startswith("kprobekit: serving http://127.0.0.1:9435/metrics"), line
        with urllib.request.urlopen("http://127.0.0.1:9435/metrics", timeout=10) as r:
            assert b"kprobekit_tcp_connects_total" in r.read()
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
    assert p.returncode == 0


@kernel
def test_forced_backend_the_kernel_lacks_is_an_error():
    missing = next((b for b, feats in (("fentry", ("fentry", "fexit")), ("kprobe", ("kprobe", "kretprobe")))
                    if not all(features.have(f) for f in feats)), None)
    if missing is None:
        pytest.skip("this kernel has both fentry and kprobes")
    code, out, err = cli("exporter", "--listen", "127.0.0.1:0", "--backend", missing)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"kprobekit exporter: use {missing} backend: "), err


@pytest.mark.host      # no kernel difference to find: the VM matrix runs the backends' tests
@kernel
def test_busy_port_is_one_line():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        code, out, err = cli("exporter", "--listen", f"127.0.0.1:{s.getsockname()[1]}")
    finally:
        s.close()
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "Address already in use" in err and "--listen" in err, err


@pytest.mark.host      # no kernel difference to find: the VM matrix runs the backends' tests
def test_bad_arguments():
    for argv in (["--listen", "nowhere"], ["--listen", "127.0.0.1:99999"], ["--netns", "x"],
                 ["--backend", "nosuchbackend"]):
        code, out, err = cli("exporter", *argv)
        assert code == 2, argv
        assert len(err.strip().splitlines()) == 1 and err.startswith("kprobekit exporter: "), err


# --- a real Prometheus server ---

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Prometheus:
    """Debian's prometheus on loopback: own data dir, scrape interval 1 s, one target."""

    def __init__(self, tmp_path, target_port):
        self.port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          "scrape_configs:\n  - job_name: kprobekit\n    static_configs:\n"
                          f"      - targets: ['127.0.0.1:{target_port}']\n")
        self.log = open(tmp_path / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [shutil.which("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_for(self._ready, timeout=60):
            raise AssertionError("prometheus did not become ready:\n" + (tmp_path / "prometheus.log").read_text())

    def _ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, expr):
        """The value of an instant query's single result, or None when it has none."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        result = body["data"]["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus(tmp_path):
    if not shutil.which("prometheus"):
        pytest.skip("prometheus: not installed (make setup installs Debian's prometheus)")
    started = []

    def start(target_port):
        p = Prometheus(tmp_path, target_port)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


OK = 'kprobekit_tcp_connects_total{family="ipv4",result="ok"}'
REFUSED = 'kprobekit_tcp_connects_total{family="ipv4",result="ECONNREFUSED"}'


@pytest.mark.host      # no kernel difference to find: the VM matrix runs the backends' tests
@kernel
def test_real_prometheus_sees_exact_connects(exporter, netns, prometheus):
    ns_name, inode = netns
    exp = exporter("--netns", str(inode))
    child, port, closed_port = traffic(ns_name)
    prom = prometheus(exp.port)
    try:
        # the first scrapes: both series exist, at their values before the test's connects
        assert wait_for(lambda: prom.query(OK) is not None and prom.query(REFUSED) is not None, timeout=60), \
            "prometheus never scraped the exporter"
        ok_before, refused_before = prom.query(OK), prom.query(REFUSED)
        assert prom.query('up{job="kprobekit"}') == 1
        run_traffic(child)
        assert wait_for(lambda: prom.query(OK) == ok_before + N_OK and
                        prom.query(REFUSED) == refused_before + N_REFUSED, timeout=30), \
            (prom.query(OK), prom.query(REFUSED))
        time.sleep(2.5)     # two more scrapes: the counts stay exact
        assert prom.query(OK) - ok_before == N_OK
        assert prom.query(REFUSED) - refused_before == N_REFUSED
        assert prom.query('max_over_time(up{job="kprobekit"}[1m])') == 1
    finally:
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=30)
    code, err = exp.stop()
    assert code == 0, err


# --- the config file ---

USER_OBJECT = os.path.join(os.path.dirname(__file__), "bpf", "usermetrics.bpf.o")


def write_config(tmp_path, text):
    path = tmp_path / "exporter.toml"
    path.write_text(text)
    return str(path)


@kernel
def test_config_function_latency(exporter, tmp_path):
    """[[function]]: a syscall here (no kprobes, no fentry); the kernel function behind it elsewhere."""
    cfg = write_config(tmp_path, '[[function]]\nname = "bind"\n')
    exp = exporter("--config", cfg)
    before = value(exp.scrape(), "kprobekit_function_latency_seconds_count", function="bind")
    for _ in range(4):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.close()
    s = exp.scrape()
    count = value(s, "kprobekit_function_latency_seconds_count", function="bind")
    assert count >= before + 4      # other processes may bind too
    assert value(s, "kprobekit_function_latency_seconds_bucket", function="bind", le="+Inf") == count
    assert value(s, "kprobekit_function_latency_seconds_sum", function="bind") > 0
    assert any(k[0] == "kprobekit_backend_info" and ("tool", "funclatency") in k[1] for k in s)
    code, err = exp.stop()
    assert code == 0, err


@pytest.mark.host      # no kernel difference to find: the VM matrix runs the backends' tests
@kernel
def test_config_trace_counts(exporter, tmp_path):
    """[[count]]: tracepoint specs counted in the kernel, by fetched fields or not at all, with filters that
    single out this test's sockets (syscall tracepoints' common_* fields are not usable: the kernel
    overwrites them for BPF with a pt_regs pointer)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    cfg = write_config(tmp_path, f"""
[[count]]
name = "test_transitions_to_port"
spec = "t:sock/inet_sock_set_state oldstate newstate dport"
labels = ["oldstate", "newstate"]
filter = "dport == {port}"

[[count]]
name = "test_odd_listens_total"
spec = "t:syscalls/sys_enter_listen backlog"
filter = "backlog == 4243"
""")
    exp = exporter("--config", cfg)
    assert value(exp.scrape(), "test_odd_listens_total") == 0
    srv.listen(4243)
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(4243)
    other.close()
    for _ in range(3):
        c = socket.create_connection(("127.0.0.1", port))
        a, _ = srv.accept()
        c.close()
        a.close()
    srv.close()
    s = exp.scrape()
    # TCP_CLOSE 7 -> TCP_SYN_SENT 2 -> TCP_ESTABLISHED 1, on the connecting side (dport == port)
    assert value(s, "test_transitions_to_port_total", oldstate="7", newstate="2") == 3
    assert value(s, "test_transitions_to_port_total", oldstate="2", newstate="1") == 3
    assert value(s, "test_odd_listens_total") == 2
    code, err = exp.stop()
    assert code == 0, err


@requires("kprobe", "kretprobe")
def test_config_kprobe_counts(exporter, tmp_path):
    """[[count]] with kprobe specs: a string label ($comm) and a return value label (EADDRINUSE)."""
    cfg = write_config(tmp_path, """
[[count]]
name = "test_inet_bind_by_comm"
spec = "p:inet_bind comm=$comm"
labels = ["comm"]

[[count]]
name = "test_inet_bind_errors"
spec = "r:inet_bind ret=$retval:s32"
labels = ["ret"]
filter = "ret != 0"
""")
    exp = exporter("--config", cfg)
    comm = open("/proc/self/comm").read().strip()
    before = exp.scrape()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    for _ in range(3):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.close()
    for _ in range(2):
        s = socket.socket()
        with pytest.raises(OSError):
            s.bind(("127.0.0.1", busy.getsockname()[1]))
        s.close()
    busy.close()
    s = exp.scrape()
    # at least ours: other processes may bind too (none do in the VMs)
    assert value(s, "test_inet_bind_by_comm_total", comm=comm) - \
        value(before, "test_inet_bind_by_comm_total", comm=comm) >= 6
    assert value(s, "test_inet_bind_errors_total", ret="-98") - \
        value(before, "test_inet_bind_errors_total", ret="-98") >= 2       # EADDRINUSE
    assert value(s, "test_inet_bind_errors_total", ret="0") == 0
    code, err = exp.stop()
    assert code == 0, err


@pytest.mark.host      # no kernel difference to find: the VM matrix runs the backends' tests
@kernel
def test_config_user_object(exporter, tmp_path):
    """[[object]]: a hash map with a struct key -> counter and gauge with its members as labels; a log2
    array -> histogram."""
    cfg = write_config(tmp_path, f"""
[[object]]
path = "{USER_OBJECT}"
rodata = {{ target_tgid = {os.getpid()} }}

[[object.metric]]
map = "calls"
name = "test_getppid_calls"
help = "getppid() calls by task"

[[object.metric]]
map = "calls"
name = "test_getppid_calls_now"
type = "gauge"

[[object.metric]]
map = "duration_log2"
name = "test_getppid_duration_seconds"
type = "histogram"
scale = 1e9
""")
    exp = exporter("--config", cfg)
    for _ in range(7):
        os.getppid()
    s = exp.scrape()
    me = {"tgid": str(os.getpid()), "comm": open("/proc/self/comm").read().strip()}
    assert value(s, "test_getppid_calls_total", **me) == 7
    assert value(s, "test_getppid_calls_now", **me) == 7
    assert value(s, "test_getppid_duration_seconds_count") == 7
    assert value(s, "test_getppid_duration_seconds_bucket", le="+Inf") == 7
    assert value(s, "kprobekit_backend_info", tool="usermetrics", backend="object") == 1
    code, err = exp.stop()
    assert code == 0, err


BAD_CONFIGS = [
    # (file text, line, words of the message)
    ('[[function]]\nname = "bind"\n\n[[count]\nname = "x"\n', 4, "expected"),
    ('[[function]]\nname = "bind"\nnmae = "x"\n', 3, "unknown key 'nmae'"),
    ('[[function]]\nname = "bind"\n\n[[metric]]\nname = "x"\n', 4, "unknown table 'metric'"),
    ('[[count]]\nname = "bad name"\nspec = "t:sock/inet_sock_set_state"\n', 2, "metric name 'bad name'"),
    ('[[count]]\nname = "a"\nspec = "t:sock/no_such_tracepoint"\n', 3, "no tracepoint sock:no_such_tracepoint"),
    ('[[count]]\nname = "a"\nspec = "t:sock/inet_sock_set_state sport"\nlabels = ["dport"]\n', 3,
     "label 'dport' is not a field"),
    ('[[count]]\nname = "a"\nspec = "t:sock/inet_sock_set_state sport"\nlabels = ["a", "b", "c", "d", "e"]\n', 4,
     "at most 4 labels"),
    ('[[count]]\nname = "a"\nspec = "t:sock/inet_sock_set_state"\n\n[[count]]\nname = "a_total"\n'
     'spec = "t:sock/inet_sock_set_state"\n', 6, "already used on line 2"),
    ('[[object]]\npath = "/nonexistent.bpf.o"\n[[object.metric]]\nmap = "m"\nname = "n"\n', 1, "no such file"),
    ('[[count]]\nname = "a"\nspec = "t:sock/inet_sock_set_state"\n\n[[count]]\nname = "b"\n'
     'spec = "t:sock/inet_sock_set_state sport"\n', 7, "already counted on line 3"),
    (f'[[object]]\npath = "{USER_OBJECT}"\n\n[[object.metric]]\nmap = "nosuchmap"\nname = "n"\n', 4,
     "no such map"),
    (f'[[object]]\npath = "{USER_OBJECT}"\n[[object.metric]]\nmap = "calls"\nname = "n"\ntype = "histogram"\n',
     3, "needs a log2 array"),
    (f'[[object]]\npath = "{USER_OBJECT}"\n[[object.metric]]\nmap = "calls"\nname = "n"\ntype = "summary"\n',
     6, "type 'summary'"),
]


@pytest.mark.host      # no kernel difference to find: the VM matrix runs the backends' tests
@kernel
@pytest.mark.parametrize("text,line,words", BAD_CONFIGS, ids=[str(i) for i in range(len(BAD_CONFIGS))])
def test_bad_config_is_one_line(tmp_path, text, line, words):
    cfg = write_config(tmp_path, text)
    code, out, err = cli("exporter", "--listen", "127.0.0.1:0", "--config", cfg)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"kprobekit exporter: config {cfg}:{line}: "), err
    assert words in err, err


@pytest.mark.host      # no kernel difference to find: the VM matrix runs the backends' tests
def test_missing_config_file():
    code, out, err = cli("exporter", "--config", "/nonexistent/exporter.toml")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "/nonexistent/exporter.toml" in err, err
