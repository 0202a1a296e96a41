"""Helpers for the Python integration tests: start gristd with a readiness
pipe (no sleeps), query it with the protoc-generated classes."""
import atexit
import os
import subprocess
import sys
import time

import grpc

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_here, "..", "..", "client", "python"))


def load_pb2():
    """grist_pb2 from the build (PYTHONPATH points at build/proto)."""
    for p in sys.path:
        cand = os.path.join(p, "grist", "v1")
        if os.path.exists(os.path.join(cand, "grist_pb2.py")):
            sys.path.insert(0, cand)
            import grist_pb2  # noqa: F401
            return grist_pb2
    raise ImportError("grist_pb2 not found: set PYTHONPATH to build/proto")


_children = []


def _reap():
    """A test that fails leaves its daemons running; they hold the test
    runner's output pipe open, so meson would wait for its timeout instead of
    reporting the failure. Kill whatever is still alive at exit."""
    for proc in _children:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


atexit.register(_reap)


def foreign_env():
    """The environment for a program that is not grist's (Chromium, Prometheus,
    promtool): without the ASan preload of a sanitizer build's Python tests."""
    env = dict(os.environ)
    if env.get("GRIST_SANITIZED"):
        env.pop("LD_PRELOAD", None)
        env.pop("ASAN_OPTIONS", None)
    return env


def spawn(argv, **kw):
    """subprocess.Popen, killed at interpreter exit if still running."""
    proc = subprocess.Popen(argv, **kw)
    _children.append(proc)
    return proc


def spawn_ready(argv, **kw):
    """Start gristd (argv: a wrapper if any, the binary, its options) with a
    readiness pipe and wait until it serves. Returns (proc, {"grpc": address,
    "http": address}) from its ready lines (the first grpc listener); raises
    RuntimeError when it exits without reporting ready. kw goes to Popen
    (e.g. stderr=)."""
    r, w = os.pipe()
    proc = spawn(list(argv) + ["--ready-fd", str(w)], pass_fds=(w,), **kw)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    if not out:
        proc.wait(timeout=30)
        raise RuntimeError(f"gristd did not start (exit {proc.returncode})")
    ready = {}
    for line in out.decode().splitlines():
        kind, addr = line.split(" ", 1)
        ready.setdefault(kind, addr)
    return proc, ready


def gristctl(gristd):
    """The gristctl of the build gristd belongs to."""
    return os.path.join(os.path.dirname(os.path.abspath(gristd)), "..", "client", "gristctl")


def start_gristd(gristd, listen, *extra):
    proc, ready = spawn_ready([gristd, "--listen", listen, "--log-level", "warn", *extra])
    return proc, ready["grpc"]


def get_job(addr, job_id):
    pb = load_pb2()
    with grpc.insecure_channel(addr) as ch:
        call = ch.unary_unary("/grist.v1.Grist/GetJob",
                              request_serializer=pb.GetJobRequest.SerializeToString,
                              response_deserializer=pb.GetJobResponse.FromString)
        return call(pb.GetJobRequest(job_id=job_id), timeout=10)


def wait_step(addr, job_id, step, timeout_s=30.0):
    """Wait until the daemon aggregated `step` of job_id (libgrist sends in the
    background); returns the job. Raises AssertionError on timeout: a caller
    never goes on as if the step had arrived."""
    deadline = time.monotonic() + timeout_s
    job = get_job(addr, job_id)
    while job.job.step < step and time.monotonic() < deadline:
        time.sleep(0.05)
        job = get_job(addr, job_id)
    assert job.job.step >= step, (f"job {job_id}: step {job.job.step} after {timeout_s} s, "
                                  f"waited for {step}")
    return job
