"""The exporter's config file (TOML): function latencies, trace-spec counts, users' own objects.

    [[function]]                      # kprobekit_function_latency_seconds{function}
    name = "inet_bind"                # a kernel function, a glob, or a syscall

    [[count]]                         # a counter of a trace spec's hits
    name = "kprobekit_binds_by_port"
    spec = "t:syscalls/sys_enter_bind fd umyaddr"   # `kprobekit trace` syntax
    labels = ["fd"]                   # fetched fields that become labels (at most 4)
    filter = "fd > 2"                 # optional, as `trace --filter`

    [[object]]                        # a BPF object of your own, loaded and attached
    path = "/opt/probes/myprobe.bpf.o"
    rodata = { target_port = 443 }    # optional: const volatile globals set before load
    [[object.metric]]
    map = "by_task"                   # hash map with a struct key: its members are the labels
    name = "myprobe_calls"
    type = "counter"                  # counter | gauge | histogram (a log2 array)
    help = "..."                      # optional
    scale = 1e9                       # histograms: divide values by this (ns -> seconds); default 1

TOML rather than YAML: Python reads it with the standard library (tomllib,
3.11+), so the exporter needs no YAML parser; its values are typed without
guessing (YAML 1.1 reads `no`, `on` or `0755` as a bool or an octal); and it is
the format of pyproject.toml.  tomllib reports no positions after a parse,
so the line of a key is found again in the text (_Lines).

Every mistake is one line, "config FILE:LINE: problem", and exit code 2.
"""

import re

from .errors import KprobekitError, MissingDependency, UsageError

MAX_LABELS, LABEL_MAX = 4, 16       # bpf/trace.bpf.c
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_TABLES = {"function": {"name"},
           "count": {"name", "spec", "labels", "filter", "help"},
           "object": {"path", "rodata", "metric"},
           "object.metric": {"map", "name", "type", "help", "scale"}}
_TYPES = ("counter", "gauge", "histogram")


class ConfigError(UsageError):
    pass


class _Lines:
    """Where the n-th [[TABLE]] of the file, or a key in it, is written."""

    def __init__(self, text):
        self.headers = {}       # table -> [line numbers]
        self.lines = text.splitlines()
        for i, line in enumerate(self.lines, 1):
            m = re.match(r"\s*\[\[\s*([\w.]+)\s*\]\]", line)
            if m:
                self.headers.setdefault(m.group(1), []).append(i)

    def of(self, table, index, key=None):
        heads = self.headers.get(table, [])
        if index >= len(heads):
            return 1
        start = heads[index]
        if key is None:
            return start
        for i in range(start, len(self.lines)):
            line = self.lines[i]
            if re.match(r"\s*\[", line):
                break
            if re.match(rf"\s*{re.escape(key)}\s*=", line) or re.search(rf"[{{,]\s*{re.escape(key)}\s*=", line):
                return i + 1
        return start


class Config:
    def __init__(self, path):
        self.path = str(path)
        self.functions = []     # [(name, line)]
        self.counts = []        # [dict with line]
        self.objects = []       # [dict with line, metrics]

    def error(self, line, problem):
        return ConfigError(f"config {self.path}:{line}: {problem}")


def load(path):
    """The parsed and checked config; raises ConfigError (one line) for any mistake in it."""
    try:
        import tomllib
    except ImportError:     # Python < 3.11
        raise MissingDependency(f"read config {path}: TOML needs Python 3.11 or later (tomllib)",
                                hint="run kprobekit with Python >= 3.11 (Debian 12 has 3.11)") from None
    cfg = Config(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"read config {path}: {e.strerror}", hint="give a readable TOML file") from None
    try:
        text = raw.decode()
        data = tomllib.loads(text)
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path}:1: not UTF-8 text ({e.reason})") from None
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line = m.group(1) if m else "?"
        problem = msg[:m.start()].strip() if m else msg
        raise ConfigError(f"config {path}:{line}: {problem[0].lower() + problem[1:]}") from None
    where = _Lines(text)
    for key in data:
        if key not in ("function", "count", "object"):
            line = next((i for i, ln in enumerate(text.splitlines(), 1)
                         if re.match(rf"\s*\[*\s*{re.escape(key)}\b", ln)), 1)
            raise cfg.error(line, f"unknown table {key!r} (expected [[function]], [[count]] or [[object]])")
        if not isinstance(data[key], list):
            raise cfg.error(where.of(key, 0) if key in where.headers else 1,
                            f"{key} must be an array of tables: write [[{key}]]")
    names = {}
    for i, t in enumerate(data.get("function", [])):
        _check_keys(cfg, where, "function", i, t)
        name = _string(cfg, where, "function", i, t, "name")
        cfg.functions.append((name, where.of("function", i)))
    for i, t in enumerate(data.get("count", [])):
        _check_keys(cfg, where, "count", i, t)
        c = {"line": where.of("count", i),
             "name": _metric_name(cfg, where, "count", i, t, names),
             "spec": _string(cfg, where, "count", i, t, "spec"),
             "filter": _string(cfg, where, "count", i, t, "filter", required=False) or "",
             "help": _string(cfg, where, "count", i, t, "help", required=False) or "",
             "labels": t.get("labels", [])}
        labels = c["labels"]
        if not isinstance(labels, list) or not all(isinstance(x, str) and _LABEL_NAME.match(x) for x in labels):
            raise cfg.error(where.of("count", i, "labels"), "labels must be a list of field names")
        if len(labels) > MAX_LABELS:
            raise cfg.error(where.of("count", i, "labels"), f"at most {MAX_LABELS} labels")
        if len(set(labels)) != len(labels):
            raise cfg.error(where.of("count", i, "labels"), "a label is listed twice")
        c["spec_line"] = where.of("count", i, "spec")
        c["filter_line"] = where.of("count", i, "filter")
        cfg.counts.append(c)
    m_index = 0
    for i, t in enumerate(data.get("object", [])):
        _check_keys(cfg, where, "object", i, t)
        o = {"line": where.of("object", i), "path": _string(cfg, where, "object", i, t, "path"),
             "rodata": t.get("rodata", {}), "metrics": []}
        if not isinstance(o["rodata"], dict):
            raise cfg.error(where.of("object", i, "rodata"), "rodata must be a table: rodata = { name = value }")
        metrics = t.get("metric", [])
        if not metrics:
            raise cfg.error(o["line"], "an [[object]] needs at least one [[object.metric]]")
        for mt in metrics:
            _check_keys(cfg, where, "object.metric", m_index, mt)
            kind = mt.get("type", "counter")
            if kind not in _TYPES:
                raise cfg.error(where.of("object.metric", m_index, "type"),
                                f"type {kind!r}: expected one of {', '.join(_TYPES)}")
            scale = mt.get("scale", 1)
            if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
                raise cfg.error(where.of("object.metric", m_index, "scale"), "scale must be a positive number")
            o["metrics"].append({"line": where.of("object.metric", m_index),
                                 "map": _string(cfg, where, "object.metric", m_index, mt, "map"),
                                 "name": _metric_name(cfg, where, "object.metric", m_index, mt, names),
                                 "type": kind, "scale": float(scale),
                                 "help": _string(cfg, where, "object.metric", m_index, mt, "help",
                                                 required=False) or ""})
            m_index += 1
        cfg.objects.append(o)
    return cfg


def _check_keys(cfg, where, table, i, t):
    if not isinstance(t, dict):
        raise cfg.error(where.of(table, i), f"[[{table}]] must be a table")
    for key in t:
        if key not in _TABLES[table]:
            raise cfg.error(where.of(table, i, key),
                            f"unknown key {key!r} in [[{table}]] (expected: {', '.join(sorted(_TABLES[table]))})")


def _string(cfg, where, table, i, t, key, required=True):
    v = t.get(key)
    if v is None:
        if required:
            raise cfg.error(where.of(table, i), f"[[{table}]] needs {key} = \"...\"")
        return None
    if not isinstance(v, str) or (required and not v.strip()):
        raise cfg.error(where.of(table, i, key), f"{key} must be a non-empty string")
    return v


def _metric_name(cfg, where, table, i, t, names):
    name = _string(cfg, where, table, i, t, "name")
    line = where.of(table, i, "name")
    if not _NAME.match(name):
        raise cfg.error(line, f"metric name {name!r}: use letters, digits, _ and : (not starting with a digit)")
    base = name[:-len("_total")] if name.endswith("_total") else name
    if base in names:
        raise cfg.error(line, f"metric name {name!r} is already used on line {names[base]}")
    if base.startswith("kprobekit_") and base in _RESERVED:
        raise cfg.error(line, f"metric name {name!r} is one of the exporter's own")
    names[base] = line
    return base


_RESERVED = {"kprobekit_tcp_connects", "kprobekit_tcp_connect_latency_seconds", "kprobekit_tcp_accepts",
             "kprobekit_tcp_state_transitions", "kprobekit_tcp_session_duration_seconds",
             "kprobekit_tcp_session_bytes", "kprobekit_binds", "kprobekit_listens", "kprobekit_events_lost",
             "kprobekit_backend_info", "kprobekit_programs_loaded", "kprobekit_function_latency_seconds"}


def located(cfg, line, error):
    """A kernel-side error (a spec that does not parse, a map that is not there) as a config error at `line`."""
    if isinstance(error, ConfigError):
        return error
    msg = error.args[0] if error.args else type(error).__name__
    first = str(msg).splitlines()[0]
    hint = getattr(error, "hint", "")
    return ConfigError(f"config {cfg.path}:{line}: {first}", hint=hint, errno=getattr(error, "errno", 0),
                       log=getattr(error, "log", ()))
