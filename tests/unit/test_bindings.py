"""The Python binding and the policy fields against their one source.

1. Layout: every ctypes structure of client/python/grist/_native.py has the
   size, field names and offsets of its C struct in client/grist/client.h
   (read from build/tests/abi-dump, compiled against the header), and the
   dump covers every member the header declares.
2. Policy: the fields of proto Policy (proto/grist/v1/grist.proto) are the
   policy keys grist.torch accepts (POLICY_KEYS), members of
   grist_attach_options and of the ctypes mirror, sent by libgrist
   (client.c), echoed by gristd in the effective policy of Welcome
   (wire.c), and daemon-wide options of gristd (config.c) unless listed
   below as per-job only.
3. Constants: the error codes the binding uses are libgrist's (error.h), the
   gRPC status codes gRPC's.

Usage: GRIST_LIB=build/client/libgrist.so test_bindings.py build/tests/abi-dump
"""
import ctypes
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "client", "python"))

from grist import _native  # noqa: E402

# ctypes class -> C struct
MIRRORS = {
    "_ClientOptions": "grist_client_options",
    "_GroupDesc": "grist_group_desc",
    "_AttachOptions": "grist_attach_options",
    "Tensor": "grist_tensor",
    "_GroupHyperparams": "grist_group_hyperparams",
    "_SessionStats": "grist_session_stats",
}
# Policy fields a job may set that have no daemon-wide gristd option, and why
PER_JOB_ONLY = {
    "candidates": "an explicit beta list belongs to a job (the default grid is the daemon's)",
    "radius": "rho of lr_coupling = radius is a property of the job's model",
}


def read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def header_members(header, struct):
    """Member names of `struct NAME { ... };` in the header (comments removed)."""
    m = re.search(r"struct %s \{(.*?)\n\};" % struct, header, re.S)
    assert m, struct
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    names = []
    for decl in body.split(";"):
        decl = decl.strip()
        if not decl:
            continue
        # "const double *candidates", "uint32_t rank, world_size", "char name[65]"
        head, *rest = decl.split(",")
        names.append(re.findall(r"(\w+)\s*(?:\[[^\]]*\])?$", head.strip())[0])
        names += [re.sub(r"[\s*]|\[.*\]", "", r) for r in rest]
    return names


def check_layout(dump):
    header = read("client", "include", "grist", "client.h")
    sizes, offsets = {}, {}
    for line in subprocess.run([dump], check=True, capture_output=True, text=True).stdout.split("\n"):
        if not line:
            continue
        key, val = line.split()
        if "." in key:
            s, f = key.split(".")
            offsets.setdefault(s, {})[f] = int(val)
        else:
            sizes[key] = int(val)
    n = 0
    for cls, struct in MIRRORS.items():
        c = getattr(_native, cls)
        members = header_members(header, struct)
        assert sorted(members) == sorted(offsets[struct]), \
            (struct, "abi_dump.c does not list every member", members, sorted(offsets[struct]))
        names = [f[0] for f in c._fields_]
        assert names == members, (cls, "ctypes fields differ from the header", names, members)
        assert ctypes.sizeof(c) == sizes[struct], (cls, ctypes.sizeof(c), sizes[struct])
        for f in names:
            assert getattr(c, f).offset == offsets[struct][f], \
                (cls, f, getattr(c, f).offset, offsets[struct][f])
            n += 1
    print(f"layout: {len(MIRRORS)} structures, {n} fields at the header's offsets")


def check_policy():
    proto = read("proto", "grist", "v1", "grist.proto")
    body = re.search(r"message Policy \{(.*?)\n\}", proto, re.S).group(1)
    fields = re.findall(r"^\s*(?:repeated\s+)?\w+\s+(\w+)\s*=\s*\d+;", body, re.M)
    assert len(fields) >= 16, fields
    assert sorted(_native.POLICY_KEYS) == sorted(fields), \
        ("POLICY_KEYS != proto Policy", sorted(set(fields) ^ set(_native.POLICY_KEYS)))
    attach = header_members(read("client", "include", "grist", "client.h"), "grist_attach_options")
    ctypes_attach = [f[0] for f in _native._AttachOptions._fields_]
    client_c = read("client", "src", "client.c")
    wire_c = read("daemon", "wire.c")
    config_c = read("daemon", "config.c")
    for f in fields:
        assert f in attach, (f, "not a member of grist_attach_options")
        assert f in ctypes_attach, (f, "not in the ctypes _AttachOptions")
        assert re.search(r"\bpol\.(n_)?%s\b" % f, client_c), (f, "libgrist does not send it")
        assert re.search(r"\bpol\.(n_)?%s\b" % f, wire_c), (f, "Welcome's effective policy lacks it")
        opt = '"%s"' % f.replace("_", "-")
        assert (opt in config_c) != (f in PER_JOB_ONLY), \
            (f, "a gristd option" if f in PER_JOB_ONLY else "no gristd option", opt)
    print(f"policy: {len(fields)} proto fields in POLICY_KEYS, grist_attach_options, ctypes, "
          f"client.c, wire.c and config.c ({len(PER_JOB_ONLY)} per-job only)")


def check_constants():
    """The constants the binding shares with C and gRPC come from them."""
    import grpc
    header = read("kernels", "include", "grist", "error.h")
    want = {n: int(v) for n, v in re.findall(r"XX\((\w+), (-?\d+),", header)}
    assert _native.ERRORS == want, (_native.ERRORS, want)
    for name in ("INVALID_ARGUMENT", "PERMISSION_DENIED", "UNAUTHENTICATED"):
        assert getattr(_native, "STATUS_" + name) == getattr(grpc.StatusCode, name).value[0], name
    c = _native._ClientOptions()
    _native._options_default(ctypes.byref(c))
    assert c.queue_capacity > 0 and c.backoff_initial_s > 0, "libgrist's defaults"
    print(f"constants: {len(want)} error codes read from libgrist, 3 gRPC status codes")


if __name__ == "__main__":
    check_layout(sys.argv[1])
    check_policy()
    check_constants()
