"""Every C function kprobekit calls through ctypes is declared as its C header declares it.

A ctypes prototype with the wrong number of arguments fails only when the call is made (the
mount(2) binding did, on every machine where tracefs was not mounted yet), so these checks read
the headers instead of waiting for a test to reach each call.
"""

import ctypes
import os
import re
import shutil
import subprocess

import pytest

from kprobekit import _libbpf, kernel

pytestmark = pytest.mark.unit

LIBBPF_HEADERS = [f"/usr/include/bpf/{h}" for h in ("libbpf.h", "bpf.h", "btf.h", "libbpf_legacy.h")]
POINTER_TYPES = (ctypes.c_void_p, ctypes.c_char_p, ctypes._Pointer)


def _declarations(paths):
    """{function name: (return type text, [argument texts])} from C headers."""
    text = ""
    for path in paths:
        with open(path) as f:
            text += f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    # typedefs of function pointers: "typedef int (*ring_buffer_sample_fn)(...)"
    fn_types = set(re.findall(r"typedef[^;]*?\(\s*\*\s*(\w+)\s*\)", text))
    out = {}
    for m in re.finditer(r"(?:LIBBPF_API|extern)\s+([\w\s\*]+?)\s*\b(\w+)\s*\(([^;{]*?)\)\s*(?:__THROW\s*)?"
                         r"(?:__\w+\s*(?:\(\([^;]*?\)\))?\s*)*;", text, re.S):
        ret, name, args = m.group(1), m.group(2), " ".join(m.group(3).split())
        parts = [] if args in ("", "void") else _split_args(args)
        # a function-pointer typedef is a pointer: say so as "*"
        parts = [a + " *" if a.split()[0] in fn_types else a for a in parts]
        ret = " ".join(ret.split())
        out[name] = (ret + " *" if ret in fn_types else ret, parts)
    return out


def _split_args(args):
    depth, cur, parts = 0, "", []
    for ch in args:
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    parts.append(cur.strip())
    return parts


@pytest.fixture(scope="module")
def libbpf_decls():
    missing = [h for h in LIBBPF_HEADERS if not os.path.exists(h)]
    if missing:
        pytest.fail(f"libbpf's headers are missing ({missing[0]}): make setup installs libbpf-dev")
    return _declarations(LIBBPF_HEADERS)


@pytest.mark.parametrize("name,restype,argtypes", _libbpf._PROTOS, ids=[p[0] for p in _libbpf._PROTOS])
def test_libbpf_prototype_matches_header(libbpf_decls, name, restype, argtypes):
    assert name in libbpf_decls, f"{name} is not declared in libbpf's headers"
    ret, args = libbpf_decls[name]
    assert len(argtypes) == len(args), f"{name}({', '.join(args)}) takes {len(args)}, bound with {len(argtypes)}"
    for c_arg, py in zip(args, argtypes):
        c_is_pointer = "*" in c_arg or "(" in c_arg
        py_is_pointer = py in (ctypes.c_void_p, ctypes.c_char_p) or isinstance(py, type) and (
            issubclass(py, (ctypes._Pointer, ctypes._CFuncPtr)))
        assert c_is_pointer == py_is_pointer, f"{name}: argument {c_arg!r} bound as {py.__name__}"
    if restype is None:
        assert ret.endswith("void") and "*" not in ret, f"{name} returns {ret}"
    else:
        ret_is_pointer = "*" in ret
        py_is_pointer = restype in (ctypes.c_void_p, ctypes.c_char_p) or issubclass(restype, ctypes._Pointer)
        assert ret_is_pointer == py_is_pointer, f"{name} returns {ret}, bound as {restype.__name__}"


def test_libc_mount_binding_runs():
    """kernel._mount reaches mount(2): a target that does not exist is ENOENT, said in one line."""
    assert kernel._mount("tracefs", "/nonexistent-kprobekit-test") is False
    assert kernel.why_not("tracefs") == ("tracefs is not mounted and mounting it at /nonexistent-kprobekit-test "
                                         "failed: No such file or directory")


def test_libc_mount_prototype_matches_header():
    decls = _declarations(["/usr/include/x86_64-linux-gnu/sys/mount.h"]) \
        if os.path.exists("/usr/include/x86_64-linux-gnu/sys/mount.h") else None
    if decls is None:
        pytest.skip("no glibc headers for this architecture (libc6-dev)")
    ret, args = decls["mount"]
    assert len(args) == 5


OPTS_STRUCTS = [("bpf_object_open_opts", _libbpf.object_open_opts), ("bpf_kprobe_opts", _libbpf.kprobe_opts), ("bpf_tracepoint_opts", _libbpf.tracepoint_opts),
                ("bpf_uprobe_opts", _libbpf.uprobe_opts)]


@pytest.mark.parametrize("c_name,py_struct", OPTS_STRUCTS, ids=[c for c, _ in OPTS_STRUCTS])
def test_opts_struct_layout_matches_header(tmp_path, c_name, py_struct):
    """Field offsets of the option structs kprobekit fills, as the C compiler lays them out."""
    cc = shutil.which("cc") or shutil.which("clang")
    assert cc, "no C compiler (make setup installs clang)"
    fields = [f for f, _ in py_struct._fields_ if not f.startswith("_")]    # _x: C's unnamed padding
    src = tmp_path / "layout.c"
    src.write_text("#include <stdio.h>\n#include <stddef.h>\n#include <bpf/libbpf.h>\nint main(void) {\n" +
                   "".join(f'printf("%zu\\n", offsetof(struct {c_name}, {f}));\n' for f in fields) +
                   "return 0; }\n")
    subprocess.run([cc, "-o", str(tmp_path / "layout"), str(src)], check=True, capture_output=True)
    offsets = [int(x) for x in subprocess.run([str(tmp_path / "layout")], capture_output=True,
                                              text=True).stdout.split()]
    assert offsets == [getattr(py_struct, f).offset for f in fields]
