"""kprobekit: trace the Linux kernel with CO-RE eBPF from Python.

For one's own tools (see docs/library.md):

    from kprobekit import BPF, run

Names are imported on first use, so `import kprobekit` stays cheap for the
command-line tools, whose start-up time is a feature.
"""

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "BPF": "bpf", "EventStream": "bpf", "run": "bpf",
    "compile": "compiler",
    "Object": "object", "Program": "program", "Map": "maps", "Link": "link",
    "TracePipe": "tracepipe", "TraceLine": "tracepipe",
    "print_log2": "histogram", "print_linear": "histogram", "bucket_of": "histogram",
    "KprobekitError": "errors", "UsageError": "errors", "NotFound": "errors", "NotSupported": "errors",
    "PermissionDenied": "errors", "AttachError": "errors", "VerifierError": "errors",
    "CompileError": "errors", "MissingDependency": "errors",
}
_MODULES = {"features", "errors", "btf", "events", "histogram", "kernel", "compiler", "tracepipe"}

# not in __all__: `from kprobekit import *` must not shadow the built-in compile()
__all__ = sorted(n for n in _EXPORTS if n != "compile") + sorted(_MODULES)


def __getattr__(name):
    # __import__ rather than importlib.import_module: importing importlib costs ~2 ms
    if name in _EXPORTS:
        module = __import__(f"{__name__}.{_EXPORTS[name]}", fromlist=[name])
        value = getattr(module, name)
    elif name in _MODULES:
        value = __import__(f"{__name__}.{name}", fromlist=["_"])
    else:
        raise AttributeError(f"module 'kprobekit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
