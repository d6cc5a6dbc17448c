"""Where `kprobekit tcpconnect` spends its start-up: the runner's steps, timed one by one.

Run by startup.py as `phases.py T0`, T0 being time.monotonic() in the parent
just before the exec; prints {phase: ms since exec} as JSON.  The steps are
those of cli/runner.setup() and _trace(), spelt out so each can be timed.
"""

import time

t_first_line = time.monotonic()   # the interpreter and site (.pth files) are done

import sys  # noqa: E402

t0 = float(sys.argv[1])
sys.path.insert(0, sys.argv[2])    # run with -IS, as /usr/local/bin/kprobekit runs
marks = {"interpreter + site": t_first_line}


def mark(name):
    marks[name] = time.monotonic()


from kprobekit.cli import main as cli_main  # noqa: E402,F401
mark("import kprobekit.cli.main")
from kprobekit import early, events  # noqa: E402
early.start_tool("tcpconnect", events.TOOL_RING_BYTES)     # as cli.main does for event tools
mark("start BTF + ring buffer on a thread (kprobekit.early)")
from kprobekit import _libbpf  # noqa: E402
from kprobekit.cli import runner  # noqa: E402
mark("import cli.runner (object, btf, maps, features)")
from kprobekit.tools.tcpconnect import TOOL  # noqa: E402
from kprobekit import features, minbtf  # noqa: E402
from kprobekit.object import Object, resolve  # noqa: E402
mark("import tools.tcpconnect")
args = runner.parse_args(TOOL, [])
mark("arguments")
runner.check_privileges()
features.have("btf")
backend, _ = runner.choose_backend(TOOL, args.backend)
use_perf = not features.have("ringbuf")
mark("features (cache) + backend choice")
path = resolve(TOOL.bpf)
obj = Object(path, kernel_btf=minbtf.cached(path))      # as runner.setup() opens it
mark("bpf_object__open_file (or the early one, once ready)")
obj.set_autoload(backend.programs)
for opt in TOOL.options:
    opt.apply(args, obj.rodata)
events.prepare(obj, use_perf, events.TOOL_RING_BYTES)
mark("autoload, .rodata, events map")
obj.load()
mark("bpf_object__load (CO-RE, verifier)")
obj.attach()
mark("attach")
stream = events.open_stream(obj)
mark("open ring buffer (BTF layout, mmap)")
print("header", file=open("/dev/null", "w"), flush=True)
t_loaded = time.monotonic()
stream.close()
obj.close()
features.release()
mark("(after loaded) detach + close")
t = time.monotonic()
_libbpf.lib.btf__free(_libbpf.lib.btf__load_vmlinux_btf())
vmlinux_ms = (time.monotonic() - t) * 1000

out, prev = {}, t0
for name, ts in marks.items():
    out[name] = (ts - t0) * 1000
out["(separately) parse vmlinux BTF once"] = vmlinux_ms
print("{" + ", ".join(f'"{k}": {v}' for k, v in out.items()) + "}")
minbtf.make(path)     # as the runner does at exit: the next run (startup.py times from the second) opens with it
