"""gristd as a shared service (docs/SECURITY.md): TLS and mTLS on gRPC and
HTTP with certificates made by openssl at test time, bearer tokens with
roles and job globs, job ownership, SIGHUP reloads of both, the refusal of
plaintext beyond loopback, the unix socket's mode, and names that would
break a view. Real clients only: grpcio, libgrist (grist._native),
urllib/ssl, gristctl, promtool and headless Chromium.

    PYTHONPATH=build/proto GRIST_LIB=build/client/libgrist.so \\
        /usr/bin/python3 tests/integration/test_security.py build/daemon/gristd
"""
import json
import os
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import grpc

import pytest_util
from grist._native import Client, Session

HERE = os.path.dirname(os.path.abspath(__file__))
pb = pytest_util.load_pb2()

OK, INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED = 0, 3, 7, 16
TOK = {  # at least 16 printable characters each
    "wa": "worker-a-0123456789abcdef",
    "wa2": "worker-a2-0123456789abcdef",
    "wb": "worker-b-0123456789abcdef",
    "ra": "reader-a-0123456789abcdef",
    "adm": "admin-0123#456789abcdef",  # a '#' inside a token is part of it
}


def tokens_file(path, names):
    roles = {"wa": "worker team-a-*", "wa2": "worker team-a-*", "wb": "worker team-b-*",
             "ra": "reader team-a-*", "adm": "admin *"}
    with open(path, "w") as f:
        f.write("# TOKEN ROLE JOB_GLOB\n")
        for n in names:
            f.write(f"{TOK[n]} {roles[n]}  # {n}\n")
    os.chmod(path, 0o600)


def health(ch):
    """grpc.health.v1 Check of the whole server, on a channel (raw bytes)."""
    call = ch.unary_unary("/grpc.health.v1.Health/Check")
    return call(b"", timeout=5)  # b"\x08\x01": SERVING


def call(ch, method, req, resp, token=None, timeout=5):
    md = [("authorization", "Bearer " + token)] if token else None
    f = ch.unary_unary("/grist.v1.Grist/" + method, request_serializer=req.SerializeToString,
                       response_deserializer=resp.FromString)
    return f(req, timeout=timeout, metadata=md)


def code_of(fn):
    """The gRPC status of fn() (0 when it returns)."""
    try:
        fn()
        return OK
    except grpc.RpcError as e:
        return e.code().value[0]


def tls_channel(addr, d, ca="ca", cert=None):
    kw = {}
    if cert:
        kw = dict(private_key=open(f"{d}/{cert}.key", "rb").read(),
                  certificate_chain=open(f"{d}/{cert}.pem", "rb").read())
    creds = grpc.ssl_channel_credentials(root_certificates=open(f"{d}/{ca}.pem", "rb").read(), **kw)
    return grpc.secure_channel(addr, creds)


def https(http, path, d, ca="ca", cert=None, token=None):
    """(status, headers, body) over TLS; raises ssl/URLError when the
    handshake fails."""
    ctx = ssl.create_default_context(cafile=f"{d}/{ca}.pem")
    if cert:
        ctx.load_cert_chain(f"{d}/{cert}.pem", f"{d}/{cert}.key")
    return http_get(f"https://{http}{path}", token, ctx)


def https_status(http, path, d, ca="ca", cert=None):
    """The HTTP status over TLS, or None when the handshake fails."""
    try:
        return https(http, path, d, ca, cert)[0]
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return None


def http_get(url, token=None, ctx=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def session(addr, job, world=1, rank=0, wait=5.0, **client_kw):
    c = Client(addr, backoff_max_s=0.5, **client_kw)
    s = Session(c, job, [dict(name="w", n=1000, beta=0.9, lr=0.1)], rank=rank, world_size=world,
                sketch_dim=64)
    ready = s.wait_ready(wait)
    return c, s, ready


def refused(addr, job, want, world=1, **kw):
    """An attach the daemon must refuse with status want."""
    c, s, ready = session(addr, job, world=world, wait=3.0, **kw)
    st, msg = s.last_error()
    s.close()
    c.close()
    assert not ready and st == want, (job, kw.get("token"), st, msg)
    return msg


def start(gristd, *args, log=None):
    """gristd with args; log: a file for its stderr, at debug level."""
    argv = [gristd, "--log-level", "debug" if log else "warn", *args]
    return pytest_util.spawn_ready(argv, **({"stderr": log} if log else {}))


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_safe_defaults(gristd, tmp):
    for args in (["--listen", "0.0.0.0:0"], ["--listen", "127.0.0.1:0", "--http", "0.0.0.0:0"],
                 ["--listen", "[::]:0"], ["--listen", "127.example.com:0"],
                 ["--listen", "unix-abstract:gristd-test"]):
        p = subprocess.run([gristd, *args], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and "--insecure" in p.stderr, (args, p.returncode, p.stderr)
    log = open(f"{tmp}/insecure.log", "w+")
    proc, ready = start(gristd, "--listen", "0.0.0.0:0", "--http", "127.0.0.1:0", "--insecure",
                        log=log)
    st, _, body = http_get(f"http://{ready['http']}/metrics")
    assert st == 200 and b"\ngristd_insecure 1\n" in body and b"\ngristd_tls 0\n" in body
    stop(proc)
    log.seek(0)
    assert "INSECURE" in log.read()
    # a unix socket is the daemon's user's only
    sock = f"{tmp}/g.sock"
    proc, _ = start(gristd, "--listen", "unix:" + sock)
    mode = stat.S_IMODE(os.stat(sock).st_mode)
    assert mode == 0o600, oct(mode)
    stop(proc)
    print("safe defaults: plaintext beyond loopback refused without --insecure (exit 2), "
          "--insecure logged and exported, unix socket mode 0600")


def test_tls(gristd, d, tmp):
    # copies: the test replaces them to check the SIGHUP reload
    shutil.copy(f"{d}/server.pem", f"{tmp}/cert.pem")
    shutil.copy(f"{d}/server.key", f"{tmp}/key.pem")
    proc, ready = start(gristd, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                        "--tls-cert", f"{tmp}/cert.pem", "--tls-key", f"{tmp}/key.pem",
                        "--listener-probe", "0.2")
    addr, http = ready["grpc"], ready["http"]
    with tls_channel(addr, d) as ch:
        assert health(ch) == b"\x08\x01"
    with grpc.insecure_channel(addr) as ch:  # plaintext to a TLS port
        assert code_of(lambda: health(ch)) != OK
    with tls_channel(addr, d, ca="other-ca") as ch:  # a CA that did not sign it
        assert code_of(lambda: health(ch)) != OK
    st, _, body = https(http, "/metrics", d)
    assert st == 200 and b"\ngristd_tls 1\n" in body
    try:  # plaintext to the TLS port
        st = http_get(f"http://{http}/metrics")[0]
    except (OSError, urllib.error.URLError):
        st = None
    assert st is None, st
    assert https_status(http, "/", d, "other-ca") is None
    # libgrist over TLS; the stream survives a certificate reload
    c, s, ok = session(addr, "tls-job", tls_ca=f"{d}/ca.pem")
    assert ok, s.last_error()
    c2, s2, ok = session(addr, "tls-job-2", tls_ca=f"{d}/other-ca.pem", wait=2.0)
    assert not ok
    s2.close(), c2.close()
    attaches = s.stats()["attaches"]
    shutil.copy(f"{d}/other-server.pem", f"{tmp}/cert.pem")
    shutil.copy(f"{d}/other-server.key", f"{tmp}/key.pem")
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with tls_channel(addr, d, ca="other-ca") as ch:
            if code_of(lambda: health(ch)) == OK:
                break
        time.sleep(0.1)
    else:
        raise AssertionError("the reloaded certificate is not served")
    with tls_channel(addr, d) as ch:  # the old one is gone for new connections
        assert code_of(lambda: health(ch)) != OK
    assert https(http, "/metrics", d, ca="other-ca")[0] == 200
    time.sleep(1.0)  # three probe intervals: the TLS listener probe must not fail
    st = s.stats()
    assert st["attaches"] == attaches and st["connected"], st  # the open stream was not dropped
    # a broken set on SIGHUP: logged, the one in force stays
    with open(f"{tmp}/cert.pem", "w") as f:
        f.write("not a certificate\n")
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    with tls_channel(addr, d, ca="other-ca") as ch:
        assert health(ch) == b"\x08\x01"
    body = https(http, "/metrics", d, ca="other-ca")[2]
    assert b"\ngristd_reload_errors_total 1\n" in body and b"\ngristd_reloads_total 1\n" in body
    s.close(), c.close()
    stop(proc)
    print("tls: gRPC and HTTP serve TLS; plaintext and a wrong CA fail; SIGHUP serves the new "
          "certificate to new connections, keeps the open stream, keeps the old set when the new "
          "one is broken")


def test_mtls(gristd, d):
    proc, ready = start(gristd, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                        "--tls-cert", f"{d}/server.pem", "--tls-key", f"{d}/server.key",
                        "--tls-client-ca", f"{d}/ca.pem")
    addr, http = ready["grpc"], ready["http"]
    for cert, ok in ((None, False), ("client", True), ("other-client", False),
                     ("expired-client", False)):
        with tls_channel(addr, d, cert=cert) as ch:
            got = code_of(lambda: health(ch))
        assert (got == OK) == ok, (cert, got)
        st = https_status(http, "/metrics", d, cert=cert)
        assert (st == 200) == ok, (cert, st)
    # a resumed TLS session (what curl, Go and Prometheus do on their next
    # connection) is accepted under mTLS
    import socket
    host, port = http.rsplit(":", 1)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
        ctx.load_cert_chain(f"{d}/client.pem", f"{d}/client.key")
        ctx.minimum_version = ctx.maximum_version = version
        sess, reused = None, []
        for _ in range(2):
            with socket.create_connection((host, int(port)), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost", session=sess) as tls:
                    tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    data = b""
                    while chunk := tls.recv(65536):
                        data += chunk
                    assert data.startswith(b"HTTP/1.1 200"), data[:100]
                    reused.append(tls.session_reused)
                    sess = tls.session
        assert reused == [False, True], (version, reused)
    c, s, ok = session(addr, "mtls-job", tls_ca=f"{d}/ca.pem", tls_cert=f"{d}/client.pem",
                       tls_key=f"{d}/client.key")
    assert ok, s.last_error()
    s.close(), c.close()
    c, s, ok = session(addr, "mtls-job", tls_ca=f"{d}/ca.pem", wait=2.0)
    assert not ok
    s.close(), c.close()
    ctl = pytest_util.gristctl(gristd)
    tls = ["--tls-ca", f"{d}/ca.pem"]
    p = subprocess.run([ctl, "--address", addr, "--timeout", "5", *tls, "--tls-cert",
                        f"{d}/client.pem", "--tls-key", f"{d}/client.key", "jobs", "--json"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "mtls-job" in p.stdout, (p.returncode, p.stderr[-300:])
    p = subprocess.run([ctl, "--address", addr, "--timeout", "3", *tls, "jobs"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, p.returncode  # no client certificate: unreachable
    stop(proc)
    # an expired server certificate: clients refuse it
    proc, ready = start(gristd, "--listen", "127.0.0.1:0", "--tls-cert",
                        f"{d}/expired-server.pem", "--tls-key", f"{d}/expired-server.key")
    with tls_channel(ready["grpc"], d) as ch:
        assert code_of(lambda: health(ch)) != OK
    c, s, ok = session(ready["grpc"], "expired", tls_ca=f"{d}/ca.pem", wait=2.0)
    assert not ok
    s.close(), c.close()
    stop(proc)
    print("mtls: no certificate, another CA's and an expired one fail on gRPC and HTTP; "
          "the CA's client certificate passes, also on a resumed session (TLS 1.2 and 1.3); "
          "an expired server certificate is refused")


def test_tokens(gristd, tmp):
    tf = f"{tmp}/tokens"
    tokens_file(tf, ["wa", "wa2", "wb", "ra", "adm"])
    logpath = f"{tmp}/tokens.log"
    log = open(logpath, "w")
    proc, ready = start(gristd, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                        "--tokens", tf, log=log)
    addr, http = ready["grpc"], ready["http"]
    lj = lambda ch, tok: call(ch, "ListJobs", pb.ListJobsRequest(), pb.ListJobsResponse, tok)
    gj = lambda ch, job, tok: call(ch, "GetJob", pb.GetJobRequest(job_id=job), pb.GetJobResponse,
                                   tok)
    with grpc.insecure_channel(addr) as ch:
        assert health(ch) == b"\x08\x01"  # open for probes
        assert code_of(lambda: lj(ch, None)) == UNAUTHENTICATED
        assert code_of(lambda: lj(ch, "not-a-token-at-all-xx")) == UNAUTHENTICATED
    # attach: the owner, then every way in that must fail
    ca, sa, ok = session(addr, "team-a-1", world=2, token=TOK["wa"])
    assert ok, sa.last_error()
    refused(addr, "team-a-1", UNAUTHENTICATED)
    refused(addr, "team-a-1", PERMISSION_DENIED, token=TOK["wb"])  # glob does not cover it
    refused(addr, "team-a-1", PERMISSION_DENIED, token=TOK["ra"])  # a reader
    msg = refused(addr, "team-a-1", PERMISSION_DENIED, world=1, token=TOK["wa2"])  # not the owner
    assert "belongs to another token" in msg, msg
    cb, sb, ok = session(addr, "team-b-1", token=TOK["wb"])
    assert ok, sb.last_error()
    # grist.torch takes the token from $GRIST_TOKEN when none is given
    import torch
    import grist.torch
    opt = torch.optim.SGD(torch.nn.Linear(4, 2).parameters(), lr=0.1, momentum=0.9)
    os.environ["GRIST_TOKEN"] = TOK["wb"]
    try:
        gs = grist.torch.attach(opt, job="team-b-torch", address=addr, sketch_dim=64, wait_s=5)
        gs.close()
        try:
            grist.torch.attach(opt, job="team-a-torch", address=addr, sketch_dim=64, wait_s=3)
        except PermissionError as e:  # the daemon's message comes with it
            assert "may not attach" in str(e), e
        else:
            raise AssertionError("a team-b token attached to team-a-torch")
    finally:
        del os.environ["GRIST_TOKEN"]
    cadm, sadm, ok = session(addr, "team-a-1", world=2, rank=1, token=TOK["adm"])
    assert ok, sadm.last_error()
    sadm.close(), cadm.close()
    with grpc.insecure_channel(addr) as ch:
        job = gj(ch, "team-a-1", TOK["adm"]).job
        assert job.world_size == 2, job  # the hijack changed nothing
        assert [j.job_id for j in lj(ch, TOK["ra"]).jobs] == ["team-a-1"]
        assert sorted(j.job_id for j in lj(ch, TOK["wb"]).jobs) == ["team-b-1", "team-b-torch"]
        assert sorted(j.job_id for j in lj(ch, TOK["adm"]).jobs) == ["team-a-1", "team-b-1",
                                                                     "team-b-torch"]
        assert code_of(lambda: gj(ch, "team-a-1", TOK["ra"])) == OK
        assert code_of(lambda: gj(ch, "team-b-1", TOK["ra"])) == PERMISSION_DENIED
        # existence is not revealed to a token that does not cover the id
        assert code_of(lambda: gj(ch, "team-b-nope", TOK["ra"])) == PERMISSION_DENIED
        assert code_of(lambda: gj(ch, "team-a-nope", TOK["ra"])) == 5  # NOT_FOUND
        w = ch.unary_stream("/grist.v1.Grist/WatchJob",
                            request_serializer=pb.WatchJobRequest.SerializeToString,
                            response_deserializer=pb.GetJobResponse.FromString)
        it = w(pb.WatchJobRequest(job_id="team-b-1"), timeout=5,
               metadata=[("authorization", "Bearer " + TOK["ra"])])
        assert code_of(lambda: next(it)) == PERMISSION_DENIED
        h = ch.unary_unary("/grist.v1.Grist/GetHistory",
                           request_serializer=pb.GetHistoryRequest.SerializeToString,
                           response_deserializer=pb.GetHistoryResponse.FromString)
        assert code_of(lambda: h(pb.GetHistoryRequest(job_id="team-b-1", series="momentum"),
                                 timeout=5, metadata=[("authorization",
                                                       "Bearer " + TOK["ra"])])) == PERMISSION_DENIED
    # HTTP: 401 without a token, 403 outside its glob, views filtered
    base = f"http://{http}"
    st, hdr, _ = http_get(base + "/api/v1/jobs")
    assert st == 401 and hdr.get("WWW-Authenticate", "").startswith("Bearer"), (st, dict(hdr))
    assert http_get(base + "/api/v1/jobs", "wrong-token-0123456789")[0] == 401
    assert http_get(base + "/metrics")[0] == 401
    st, _, body = http_get(base + "/api/v1/jobs", TOK["ra"])
    assert st == 200 and [j["id"] for j in json.loads(body)["jobs"]] == ["team-a-1"]
    assert http_get(base + "/api/v1/jobs/team-b-1", TOK["ra"])[0] == 403
    assert http_get(base + "/api/v1/jobs/team-a-1", TOK["ra"])[0] == 200
    st, _, body = http_get(base + "/metrics", TOK["ra"])
    assert st == 200 and b'job="team-a-1"' in body and b"team-b-1" not in body
    assert http_get(base + "/")[0] == 200  # the page is code, not data
    # gristctl: the token from a file, never from the command line
    ctl = pytest_util.gristctl(gristd)
    with open(f"{tmp}/ra.token", "w") as f:
        f.write(TOK["ra"] + "\n")
    p = subprocess.run([ctl, "--address", addr, "--token-file", f"{tmp}/ra.token", "jobs",
                        "--json"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and [j["id"] for j in json.loads(p.stdout)["jobs"]] == ["team-a-1"]
    env = dict(os.environ)
    env.pop("GRIST_TOKEN", None)
    p = subprocess.run([ctl, "--address", addr, "jobs"], capture_output=True, text=True,
                       timeout=30, env=env)
    assert p.returncode == 4 and "token" in p.stderr, (p.returncode, p.stderr)
    p = subprocess.run([ctl, "--address", addr, "health"], capture_output=True, text=True,
                       timeout=30, env=env)  # probes need no token
    assert p.returncode == 0 and p.stdout.strip() == "SERVING", (p.returncode, p.stderr)
    p = subprocess.run([ctl, "--address", addr, "--token-file", f"{tmp}/ra.token", "job",
                        "team-b-1"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 4 and "does not cover" in p.stderr, (p.returncode, p.stderr)
    # SIGHUP: wa revoked ends its stream; a broken file keeps the tokens in force
    tokens_file(tf, ["wb", "ra", "adm"])
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while sa.last_error()[0] != UNAUTHENTICATED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sa.last_error()[0] == UNAUTHENTICATED, sa.last_error()
    assert sb.stats()["connected"], sb.stats()  # the others go on
    refused(addr, "team-a-2", UNAUTHENTICATED, token=TOK["wa"])
    with open(tf, "a") as f:
        f.write("short worker *\n")
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    st, _, body = http_get(base + "/metrics", TOK["adm"])
    assert b"\ngristd_reload_errors_total 1\n" in body and b"\ngristd_tokens 3\n" in body, body[-800:]
    assert http_get(base + "/api/v1/jobs", TOK["ra"])[0] == 200
    sa.close(), ca.close(), sb.close(), cb.close()
    stop(proc)
    log.close()
    text = open(logpath).read()
    leaked = [n for n, t in TOK.items() if t in text]
    assert not leaked and "tokens file" in text, leaked  # debug log, and no token in it
    # a malformed file stops the start, naming the line but not the token
    with open(tf, "w") as f:
        f.write(f"{TOK['adm']} admin *\nabc worker *\n")
    p = subprocess.run([gristd, "--tokens", tf], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and ":2:" in p.stderr and "abc" not in p.stderr, p.stderr
    print("tokens: UNAUTHENTICATED without one, PERMISSION_DENIED outside the glob, for a reader "
          "attaching, for another worker token of the same glob (job unchanged); ListJobs, "
          "/api/v1 and /metrics filtered; HTTP 401/403; gristctl exit 4; SIGHUP revokes a live "
          "stream and keeps the tokens when the file is broken; no token in the debug log")


RESOURCE_EXHAUSTED = 8


def test_limits(gristd, tmp):
    import numpy as np
    tf = f"{tmp}/tokens-limits"
    tokens_file(tf, ["wa", "adm"])
    proc, ready = start(gristd, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                        "--max-streams-per-peer", "3", "--max-streams-per-token", "2",
                        "--job-create-burst", "4", "--job-create-rate", "0.001",
                        "--empty-job-expiry", "1", "--max-summary-rate", "50", "--tokens", tf)
    addr, http = ready["grpc"], ready["http"]
    # streams per token, then per address
    open_ = [session(addr, "team-a-1", world=8, rank=r, token=TOK["wa"]) for r in range(2)]
    assert all(ok for _, _, ok in open_)
    msg = refused(addr, "team-a-1", RESOURCE_EXHAUSTED, world=8, token=TOK["wa"])
    assert "per-token" in msg, msg
    open_.append(session(addr, "team-a-2", token=TOK["adm"]))
    assert open_[-1][2]
    msg = refused(addr, "team-a-3", RESOURCE_EXHAUSTED, token=TOK["adm"])
    assert "per-peer" in msg, msg
    for c, s, _ in open_:
        s.close(), c.close()
    # job creation per address: a burst of 4 (2 made above), then refused;
    # joining a job that exists is not creation
    c3, s3, ok = session(addr, "team-a-3", token=TOK["adm"])
    assert ok, s3.last_error()
    s3.close(), c3.close()
    c4, s4, ok = session(addr, "team-a-4", token=TOK["adm"])
    assert ok, s4.last_error()
    c5, s5, ok = session(addr, "team-a-4", token=TOK["adm"])  # a job that exists: joined
    assert ok, s5.last_error()
    s4.close(), c4.close(), s5.close(), c5.close()
    msg = refused(addr, "team-a-5", RESOURCE_EXHAUSTED, token=TOK["adm"])
    assert "job-create-rate" in msg, msg
    # jobs that never sent a summary go after --empty-job-expiry (1 s)
    deadline = time.monotonic() + 10
    with grpc.insecure_channel(addr) as ch:
        while time.monotonic() < deadline:
            left = call(ch, "ListJobs", pb.ListJobsRequest(), pb.ListJobsResponse, TOK["adm"]).jobs
            if not left:
                break
            time.sleep(0.2)
    assert not left, [j.job_id for j in left]
    text = http_get(f"http://{http}/metrics", TOK["adm"])[2].decode()
    limited = {ln.split()[0]: int(ln.split()[1]) for ln in text.splitlines()
               if ln.startswith(("gristd_streams_limited_total", "gristd_jobs_create_limited"))}
    # a refused session retries with backoff: each retry counts
    assert limited["gristd_streams_limited_total"] >= 2, limited
    assert limited["gristd_jobs_create_limited_total"] >= 1, limited
    stop(proc)
    # summaries per second per job: 50/s, sent flat out
    proc, ready = start(gristd, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                        "--max-summary-rate", "50", "--tokens", tf)
    addr, http = ready["grpc"], ready["http"]
    c, s, ok = session(addr, "team-a-1", token=TOK["adm"])
    assert ok, s.last_error()
    acc = np.zeros((1, 64), dtype=np.float32)
    t0 = time.monotonic()
    for t in range(1, 401):
        s.submit(t, acc + t, np.ones(1), [8])
        if t % 20 == 0:
            s.flush(5)
    elapsed = time.monotonic() - t0
    st, msg = s.last_error()
    assert st == RESOURCE_EXHAUSTED and "max-summary-rate" in msg, (st, msg)
    text = http_get(f"http://{http}/metrics", TOK["adm"])[2].decode()
    metric = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines()
              if ln.startswith("gristd_") and " " in ln and "{" not in ln}
    step = int(metric["gristd_summaries_total"])  # summaries applied (world 1: one per step)
    assert metric["gristd_summaries_rate_limited_total"] >= 1, metric
    # what was applied stays within the rate (the burst of 50, then 50/s)
    assert step <= 50 + 50 * (elapsed + 1) + 20, (step, elapsed)
    s.close(), c.close()
    stop(proc)
    print(f"limits: per-token and per-address streams, job creation per address and the "
          f"summary rate refused with RESOURCE_EXHAUSTED; empty jobs gone after 1 s; "
          f"{step} of 400 steps applied in {elapsed:.1f} s at 50/s")


def hello_bytes(job, group="w"):
    h = pb.Hello(job_id=job, rank=0, world_size=1, sketch_dim=64,
                 groups=[pb.GroupSpec(name=group, num_elements=1000, lr=0.1, beta=0.9)])
    return pb.WorkerMessage(hello=h).SerializeToString()


def attach_raw(addr, msg):
    """An Attach stream sending one pre-encoded WorkerMessage: the status."""
    with grpc.insecure_channel(addr) as ch:
        f = ch.stream_stream("/grist.v1.Grist/Attach")
        it = f(iter([msg]), timeout=5)
        try:
            for _ in it:
                return OK, ""
        except grpc.RpcError as e:
            return e.code().value[0], e.details()
    return OK, ""


def test_names(gristd, artifacts):
    proc, ready = start(gristd, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
    addr, http = ready["grpc"], ready["http"]
    # bytes no client library would send: patched into an encoded Hello
    for raw, where in ((b"a\xffb\xfe", "job_id"), (b"a\xc0\xafz", "job_id"),
                       (b"\xed\xa0\x80x", "job_id")):
        msg = hello_bytes("PLACEHOLDER"[:len(raw)]).replace(b"PLACEHOLDER"[:len(raw)], raw, 1)
        st, det = attach_raw(addr, msg)
        assert st == INVALID_ARGUMENT and "UTF-8" in det and where in det, (raw, st, det)
    for job, group, word in (("tab\there", "w", "job_id"), ("ok-job", "line\nbreak", "name"),
                             ("ok-job", "sep\u2028x", "name"), ("c1\u0085", "w", "job_id"),
                             ("x" * (1 << 20), "w", "job_id")):
        st, det = attach_raw(addr, hello_bytes(job, group))
        assert st == INVALID_ARGUMENT and word in det, (job[:20], group, st, det[:200])
    # what is accepted must come out escaped everywhere
    job = "<img src=x onerror=document.title='pwned'>&amp;"
    group = "\"</script><script>document.title='pwned'</script>\\"
    c = Client(addr)
    s = Session(c, job, [dict(name=group, n=1000, beta=0.9, lr=0.1)], sketch_dim=64)
    assert s.wait_ready(5), s.last_error()
    with grpc.insecure_channel(addr) as ch:  # ListJobs keeps working for grpcio clients
        jobs = call(ch, "ListJobs", pb.ListJobsRequest(), pb.ListJobsResponse).jobs
        assert [j.job_id for j in jobs] == [job]
    st, _, body = http_get(f"http://{http}/api/v1/jobs/" + urllib.parse.quote(job, safe=""))
    got = json.loads(body)
    assert st == 200 and got["job"]["id"] == job and got["groups"][0]["name"] == group, got
    st, _, body = http_get(f"http://{http}/metrics")
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: sh deploy/setup.sh installs Debian's prometheus"
    p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                       env=pytest_util.foreign_env())
    assert p.returncode == 0, (p.stdout, p.stderr)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium missing: sh deploy/setup.sh installs it"
    page = f"http://{http}/#job=" + urllib.parse.quote(job, safe="")
    p = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--virtual-time-budget=8000",
                        f"--user-data-dir={tempfile.mkdtemp()}", "--dump-dom", page],
                       capture_output=True, timeout=120, env=pytest_util.foreign_env())
    dom = p.stdout.decode()
    assert "<title>gristd</title>" in dom and "pwned" not in dom.split("<body")[0], dom[:1500]
    assert "live," in dom and "&lt;img src=x" in dom, dom[:3000]
    assert "<img" not in dom.split("<body", 1)[1], "an element was injected"
    ctl = pytest_util.gristctl(gristd)
    p = subprocess.run([ctl, "--address", addr, "jobs", "--json"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0 and json.loads(p.stdout)["jobs"][0]["id"] == job, p.stdout
    s.close(), c.close()
    stop(proc)
    print("names: non-UTF-8, overlong, surrogate, control characters, U+2028 and a 1 MiB id "
          "refused at Hello (INVALID_ARGUMENT); HTML and quotes escaped in JSON, /metrics "
          "(promtool passes), the page (no script ran) and gristctl")


def main():
    gristd = sys.argv[1]
    artifacts = os.path.join(os.path.dirname(os.path.abspath(gristd)), "..", "meson-logs")
    if not shutil.which("openssl"):
        print("openssl missing: sh deploy/setup.sh installs it")
        return 1
    tmp = tempfile.mkdtemp(prefix="grist-sec-")
    d = os.path.join(tmp, "certs")
    subprocess.run(["sh", os.path.join(HERE, "..", "security", "mkcerts.sh"), d], check=True)
    only = sys.argv[2:]
    for name, fn in (("safe", lambda: test_safe_defaults(gristd, tmp)),
                     ("tls", lambda: test_tls(gristd, d, tmp)),
                     ("mtls", lambda: test_mtls(gristd, d)),
                     ("tokens", lambda: test_tokens(gristd, tmp)),
                     ("limits", lambda: test_limits(gristd, tmp)),
                     ("names", lambda: test_names(gristd, artifacts))):
        if not only or name in only:
            fn()
    shutil.rmtree(tmp, ignore_errors=True)
    print("security: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
