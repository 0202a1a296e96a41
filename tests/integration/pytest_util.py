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


def start_gristd(gristd, listen, *extra):
    r, w = os.pipe()
    proc = spawn([gristd, "--listen", listen, "--ready-fd", str(w), "--log-level", "warn",
                  *extra], pass_fds=(w,))
    os.close(w)
    out = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        out += chunk
    os.close(r)
    if not out:
        proc.wait(timeout=10)
        raise RuntimeError("gristd did not start")
    return proc, out.decode().split()[1]


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
