"""exporter: Prometheus metrics, counted in the kernel and read from maps at scrape time.

The network metrics reuse the tools' own objects (tcpconnect, tcpaccept,
tcpstates, tcplife, bindsnoop, solisten) with their kk_metrics switch on:
the same hooks and backends as the tools, chosen the same way, but the
programs count into maps (bpf/include/kk_metrics.bpf.h) instead of sending
events.  A config file (exporter_config.py) adds function latencies, counts
of trace specs and a user's own objects.
"""

import mmap
import sys
import threading
import time

from .. import events, features, kernel, metrics
from ..cli.runner import check_privileges, choose_backend, command_parser, netns_arg, run_command
from ..errors import MissingDependency, bad_argument, NotFound, NotSupported, UsageError
from ..object import Object
from ..tcp import STATES

DEFAULT_LISTEN = "127.0.0.1:9435"
FAMILIES = {2: "ipv4", 10: "ipv6"}
PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 262: "mptcp"}

EXAMPLES = """examples:
  kprobekit exporter                                # http://127.0.0.1:9435/metrics
  kprobekit exporter --listen 0.0.0.0:9435          # for a Prometheus on another host
  kprobekit exporter --config /etc/kprobekit/exporter.toml
  curl -s localhost:9435/metrics | grep kprobekit_tcp_connects_total

See docs/exporter.md for the metrics, the config file and deployment."""


def listen_arg(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise bad_argument(f"invalid address {text!r}: expected ADDR:PORT (e.g. 127.0.0.1:9435)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def parser():
    p = command_parser("exporter", "Serve Prometheus metrics of TCP and bind/listen activity, counted in the "
                       "kernel.", EXAMPLES)
    p.add_argument("--listen", type=listen_arg, default=DEFAULT_LISTEN, metavar="ADDR:PORT",
                   help=f"where to serve /metrics (default {DEFAULT_LISTEN}; port 0: any free port)")
    p.add_argument("--config", metavar="FILE", help="TOML file adding function latencies, trace counts and "
                   "your own BPF objects' maps (docs/exporter.md)")
    p.add_argument("--backend", metavar="NAME", default="auto",
                   help="use this backend (fentry, kprobe, tracepoint, ...) in every tool that has it; "
                        "the others choose as usual (default: each tool's best)")
    p.add_argument("--netns", type=netns_arg, metavar="ID",
                   help="count sockets of this network namespace only (inode number; filtered in the kernel)")
    return p


class Source:
    """One object counting in the kernel, and how its maps become metric families."""

    def __init__(self, name, backend, objects, collect):
        self.name, self.backend, self.objects, self.collect = name, backend, objects, collect

    def lost(self):
        n = 0
        for obj in self.objects:
            try:
                bss = obj.bss
            except NotFound:        # a user's object without .bss
                continue
            if "kk_lost" in bss:
                n += bss["kk_lost"]
        return n

    def programs(self):
        return sum(1 for obj in self.objects for p in obj.programs.values() if p.fd >= 0)


# --- the default (network) metrics: one function per tool, reading its metrics maps ---

def _result(key):
    if not key.known:
        return "unknown"
    return key.ret.name or "ok"


def _connects(obj):
    fam = metrics.CounterMetricFamily("kprobekit_tcp_connects", "Active TCP connects by address family and "
                                      "result: ok, an errno name (ECONNREFUSED, ETIMEDOUT, ...) or unknown "
                                      "(closed before the handshake ended).", labels=["family", "result"])
    counts = {(f, r): 0 for f in FAMILIES.values() for r in ("ok", "ECONNREFUSED", "ETIMEDOUT")}
    for key, n in obj.map("connects").items():
        labels = (FAMILIES.get(key.family, str(key.family)), _result(key))
        counts[labels] = counts.get(labels, 0) + n
    for labels, n in sorted(counts.items()):
        fam.add_metric(list(labels), n)
    h = obj.map("connect_latency")[0]
    return [fam, metrics.histogram("kprobekit_tcp_connect_latency_seconds",
                                   "TCP handshake time of active connects (SYN_SENT -> ESTABLISHED).",
                                   h.slots, h.sum / metrics.NS_PER_S)]


def _accepts(obj):
    fam = metrics.CounterMetricFamily("kprobekit_tcp_accepts", "Accepted TCP connections by address family "
                                      "and local (listening) port.", labels=["family", "port"])
    for key, n in sorted(obj.map("accepts").items()):
        fam.add_metric([FAMILIES.get(key.family, str(key.family)), str(key.port)], n)
    return [fam]


def _transitions(obj):
    fam = metrics.CounterMetricFamily("kprobekit_tcp_state_transitions", "TCP state transitions.",
                                      labels=["from", "to"])
    for key, n in sorted(obj.map("transitions").items()):
        fam.add_metric([STATES.get(key.oldstate, str(key.oldstate)), STATES.get(key.newstate, str(key.newstate))],
                       n)
    return [fam]


def _sessions(obj):
    h = obj.map("session_duration")[0]
    hist = metrics.histogram("kprobekit_tcp_session_duration_seconds",
                             "Duration of closed TCP sessions (first SYN_SENT/SYN_RECV/ESTABLISHED to CLOSE).",
                             h.slots, h.sum / metrics.NS_PER_S, lo=10, hi=45)
    by = obj.map("session_bytes")
    fam = metrics.CounterMetricFamily("kprobekit_tcp_session_bytes", "Bytes of closed TCP sessions: tx (acked "
                                      "by the peer) and rx (received).", labels=["direction"])
    for i, direction in enumerate(("tx", "rx")):
        fam.add_metric([direction], by.get(i, 0))
    return [hist, fam]


def _binds(obj):
    fam = metrics.CounterMetricFamily("kprobekit_binds", "bind() calls on IPv4/IPv6 sockets by protocol and "
                                      "result (ok or the errno name).", labels=["protocol", "result"])
    for key, n in sorted(obj.map("binds").items()):
        fam.add_metric([PROTOCOLS.get(key.proto, str(key.proto)), key.ret.name or "ok"], n)
    return [fam]


def _listens(obj):
    fam = metrics.CounterMetricFamily("kprobekit_listens", "Successful listen() calls on TCP sockets.")
    fam.add_metric([], obj.map("listens").get(0, 0))
    return [fam]


# tool -> (rodata it needs in metrics mode, collector)
NETWORK = {
    "tcpconnect": ({"report_at_end": True, "report_failed": True}, _connects),
    "tcpaccept": ({}, _accepts),
    "tcpstates": ({}, _transitions),
    "tcplife": ({}, _sessions),
    "bindsnoop": ({}, _binds),
    "solisten": ({}, _listens),
}


def tool_backend(tool, wanted):
    if wanted != "auto" and tool.backend(wanted) is not None:
        return choose_backend(tool, wanted)
    return choose_backend(tool, "auto")


def load_network(args, notes):
    """The tools' objects in metrics mode: one Source per tool the kernel can run."""
    import importlib
    sources = []
    use_perf = not features.have("ringbuf")
    for name, (rodata, collect) in NETWORK.items():
        tool = importlib.import_module(f"kprobekit.tools.{name}").TOOL
        try:
            backend, _ = tool_backend(tool, args.backend)
        except NotSupported as e:
            if tool.backend(args.backend) is not None:
                raise       # asked for by name: an error, not a silent fallback
            notes.append(f"{name} metrics left out: {e}")
            continue
        if any(n in ("kprobe", "kretprobe") for n in backend.needs):
            kernel.remove_stale_kprobes()
        obj = Object.open(tool.bpf)
        obj.set_autoload(backend.programs)
        obj.rodata["kk_metrics"] = True
        if args.netns:
            obj.rodata["kk_metrics_netns"] = args.netns
        for k, v in rodata.items():
            obj.rodata[k] = v
        # no events are sent in metrics mode: the smallest ring buffer there is
        events.prepare(obj, use_perf, ring_bytes=mmap.PAGESIZE)
        obj.load()
        obj.attach()
        sources.append(Source(name, backend.name, [obj], lambda o=obj, c=collect: c(o)))
    return sources


class Collector:
    """What prometheus_client calls at each scrape (in its server thread)."""

    def __init__(self, sources):
        self.sources = sources
        self.lock = threading.Lock()
        self.closed = False

    def describe(self):
        return []       # no collect() at registration: the maps are read only when scraped

    def collect(self):
        with self.lock:
            if self.closed:
                return
            info = metrics.GaugeMetricFamily("kprobekit_backend_info", "The backend each source runs on "
                                             "(always 1).", labels=["tool", "backend"])
            progs = metrics.GaugeMetricFamily("kprobekit_programs_loaded", "BPF programs loaded, by source.",
                                              labels=["tool"])
            lost = metrics.CounterMetricFamily("kprobekit_events_lost", "Events the kernel could not count "
                                               "(a full map) or send.")
            n_lost = 0
            for s in self.sources:
                yield from s.collect()
                info.add_metric([s.name, s.backend], 1)
                progs.add_metric([s.name], s.programs())
                n_lost += s.lost()
            lost.add_metric([], n_lost)
            yield from (info, progs, lost)

    def close(self):
        with self.lock:
            self.closed = True


def backend_names():
    import importlib
    names = {"auto"}
    for name in NETWORK:
        names.update(b.name for b in importlib.import_module(f"kprobekit.tools.{name}").TOOL.backends)
    return names


def body(args, stopped):
    try:
        from prometheus_client import start_http_server
        from prometheus_client.registry import CollectorRegistry
    except ImportError:
        raise MissingDependency("serve metrics: the prometheus-client package is missing",
                                hint="pip install prometheus-client (or `make venv`)") from None
    known = backend_names()
    if args.backend not in known:
        raise UsageError(f"use backend {args.backend!r}: no network tool has it "
                         f"(choose from {', '.join(sorted(known))})")
    check_privileges()
    sources = []
    if args.config:
        from .. import exporter_config, exporter_sources
        # first: a bad file is reported before the network metrics load
        sources = exporter_sources.load(exporter_config.load(args.config), args)
    notes = []
    sources = load_network(args, notes) + sources
    for note in notes:
        print(f"kprobekit exporter: {note}", file=sys.stderr)
    collector = Collector(sources)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    host, port = args.listen
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise UsageError(f"listen on {host}:{port}: {e.strerror or e}",
                         hint="choose another address with --listen ADDR:PORT") from None
    try:
        shown = f"[{host}]" if ":" in host else host
        backends = ", ".join(f"{s.name}={s.backend}" for s in sources)
        print(f"kprobekit: serving http://{shown}:{server.server_port}/metrics ({backends})",
              file=sys.stderr, flush=True)
        while not stopped():
            time.sleep(0.25)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        collector.close()       # a scrape still running finishes first; later ones read nothing
    return 0


def main(argv):
    return run_command("exporter", parser(), argv, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
