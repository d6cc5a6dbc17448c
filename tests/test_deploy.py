"""deploy/ and docs/exporter.md, checked without a cluster: the systemd unit, the DaemonSet, the
Dockerfile, and the documented config, scrape config and alerts (promtool)."""

import configparser
import os
import re
import shutil
import subprocess

import pytest
import yaml

from kprobekit import exporter_config

pytestmark = pytest.mark.unit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(ROOT, "deploy", "kprobekit.service")
DAEMONSET = os.path.join(ROOT, "deploy", "kubernetes", "daemonset.yaml")
DOCKERFILE = os.path.join(ROOT, "deploy", "Dockerfile")
DOC = os.path.join(ROOT, "docs", "exporter.md")

# what kprobekit's check_privileges accepts, and what libbpf needs besides on old kernels
BPF_CAPS = {"BPF", "PERFMON", "SYS_ADMIN"}


def unit():
    p = configparser.RawConfigParser(strict=False, interpolation=None)
    p.optionxform = str
    p.read(UNIT)
    return p


def test_unit_runs_the_exporter_hardened():
    s = unit()["Service"]
    assert re.search(r"/kprobekit exporter --listen \S+:9435\b", s["ExecStart"])
    assert s["KillSignal"] == "SIGTERM"
    assert s["User"] == "root"
    caps = set(s["CapabilityBoundingSet"].split())
    assert {f"CAP_{c}" for c in BPF_CAPS} <= caps
    assert caps <= {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_DAC_READ_SEARCH"}
    assert s["NoNewPrivileges"] == "yes"
    assert s["ProtectSystem"] == "strict"
    assert s["RuntimeDirectory"] == "kprobekit"         # the features cache, /run/kprobekit
    assert "/sys/kernel/tracing" in s["ReadWritePaths"].split()
    # these two would break BPF loading (see the comments in the unit)
    assert s.get("ProtectKernelTunables", "no") == "no"
    assert s.get("MemoryDenyWriteExecute", "no") == "no"
    for key in ("ProtectHome", "PrivateTmp", "ProtectKernelModules", "ProtectControlGroups", "RestrictNamespaces",
                "RestrictSUIDSGID", "LockPersonality"):
        assert s[key] == "yes", key
    assert set(s["RestrictAddressFamilies"].split()) >= {"AF_INET", "AF_INET6"}
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze: not installed")
def test_unit_verifies():
    p = subprocess.run(["systemd-analyze", "verify", UNIT], capture_output=True, text=True)
    # warnings about this unit (unknown keys, bad values) name its file
    problems = [ln for ln in (p.stdout + p.stderr).splitlines() if "kprobekit.service" in ln]
    assert p.returncode == 0 and not problems, p.stdout + p.stderr


def daemonset():
    docs = [d for d in yaml.safe_load_all(open(DAEMONSET)) if d]
    ds = [d for d in docs if d["kind"] == "DaemonSet"]
    assert len(ds) == 1
    return ds[0], docs


def test_daemonset_fields():
    ds, docs = daemonset()
    assert ds["apiVersion"] == "apps/v1"
    ns = ds["metadata"]["namespace"]
    assert any(d["kind"] == "Namespace" and d["metadata"]["name"] == ns for d in docs)
    spec = ds["spec"]
    tmpl = spec["template"]
    selector = spec["selector"]["matchLabels"]
    assert selector and all(tmpl["metadata"]["labels"].get(k) == v for k, v in selector.items())
    pod = tmpl["spec"]
    assert pod["hostNetwork"] is True
    assert {"operator": "Exists"} in pod["tolerations"]
    (c,) = pod["containers"]
    port = next(p for p in c["ports"] if p["name"] == "metrics")
    ann = tmpl["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == str(port["containerPort"]) == "9435"
    assert ann.get("prometheus.io/path", "/metrics") == "/metrics"
    assert c["args"][0] == "exporter"
    listen = c["args"][c["args"].index("--listen") + 1]
    assert listen == f"0.0.0.0:{port['containerPort']}"
    assert c["readinessProbe"]["httpGet"]["path"] == "/metrics"


def test_daemonset_privileges_and_mounts():
    ds, _ = daemonset()
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc.get("privileged", False) is False         # capabilities, not privileged
    assert sc["runAsUser"] == 0
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert BPF_CAPS <= set(sc["capabilities"]["add"])
    assert sc["seccompProfile"]["type"] == "Unconfined"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ("/sys/kernel/tracing", "/sys/kernel/btf"):
        assert path in mounts, path
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path
    assert mounts["/sys/kernel/btf"].get("readOnly") is True
    if sc.get("readOnlyRootFilesystem"):
        # the features cache must stay writable
        assert "emptyDir" in volumes[mounts["/run/kprobekit"]["name"]]
    # every mount has its volume
    assert all(m["name"] in volumes for m in c["volumeMounts"])


def dockerfile():
    out = []
    text = open(DOCKERFILE).read().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile():
    ins = dockerfile()
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) == 2 and all(f.startswith("debian:12") for f in froms)
    build = ins[:[i for i, (w, _) in enumerate(ins) if w == "FROM"][1]]
    runtime = ins[len(build):]
    assert any(w == "RUN" and "make bpf" in r for w, r in build)
    assert any(w == "RUN" and "libbpf1" in r and "python3" in r for w, r in runtime)
    assert not any(w == "RUN" and "clang" in r for w, r in runtime)
    assert ("EXPOSE", "9435") in runtime
    entry = next(r for w, r in runtime if w == "ENTRYPOINT")
    cmd = next(r for w, r in runtime if w == "CMD")
    assert entry.endswith('bin/kprobekit"]')
    assert cmd.startswith('["exporter"')
    # what the Dockerfile copies exists
    for w, r in build:
        if w == "COPY":
            for src in r.split()[:-1]:
                assert os.path.exists(os.path.join(ROOT, src)), src
    ds, _ = daemonset()
    image = ds["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0] == "kprobekit"


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", open(DOC).read(), re.S)


def test_doc_lists_every_default_metric():
    text = open(DOC).read()
    from kprobekit.tools.exporter import NETWORK
    assert set(NETWORK) == {"tcpconnect", "tcpaccept", "tcpstates", "tcplife", "bindsnoop", "solisten"}
    for name in exporter_config._RESERVED - {"kprobekit_function_latency_seconds"}:
        counter = name not in ("kprobekit_backend_info", "kprobekit_programs_loaded") and "seconds" not in name
        assert f"`{name}_total`" in text if counter else f"`{name}`" in text, name


def test_doc_config_parses(tmp_path):
    (toml,) = blocks("toml")
    path = tmp_path / "exporter.toml"
    path.write_text(toml)
    cfg = exporter_config.load(str(path))
    assert [n for n, _ in cfg.functions] == ["bind", "inet_csk_accept"]
    assert len(cfg.counts) == 2 and len(cfg.objects) == 1
    assert [m["type"] for m in cfg.objects[0]["metrics"]] == ["counter", "histogram"]


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool: not installed (Debian's prometheus has it)")
def test_doc_scrape_config_and_alerts_pass_promtool(tmp_path):
    scrape, alerts = blocks("yaml")
    (tmp_path / "kprobekit-alerts.yml").write_text(alerts)
    (tmp_path / "prometheus.yml").write_text(scrape)

    def promtool(*argv):
        p = subprocess.run(["promtool", *argv], cwd=tmp_path, capture_output=True, text=True)
        return p.returncode, p.stdout + p.stderr

    code, out = promtool("check", "rules", "kprobekit-alerts.yml")
    assert code == 0, out
    code, out = promtool("check", "config", "prometheus.yml")
    if code and "field kubernetes_sd_configs not found" in out:
        # Debian builds Prometheus without Kubernetes discovery: check the rest with promtool, the
        # pod job's relabelling here
        cfg = yaml.safe_load(scrape)
        pods = [j for j in cfg["scrape_configs"] if "kubernetes_sd_configs" in j]
        assert pods and pods[0]["kubernetes_sd_configs"] == [{"role": "pod"}]
        for r in pods[0]["relabel_configs"]:
            assert r.get("action", "replace") in ("keep", "replace")
            re.compile(r.get("regex", "(.*)"))
        addr = next(r for r in pods[0]["relabel_configs"] if r.get("target_label") == "__address__")
        m = re.fullmatch(addr["regex"], "10.0.0.7:8080;9435")
        assert m.expand(addr["replacement"].replace("$", "\\")) == "10.0.0.7:9435"
        cfg["scrape_configs"] = [j for j in cfg["scrape_configs"] if j not in pods]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        code, out = promtool("check", "config", "prometheus.yml")
    assert code == 0, out
    rules = yaml.safe_load(alerts)["groups"][0]["rules"]
    assert any("kprobekit_tcp_connects_total" in r["expr"] for r in rules)
