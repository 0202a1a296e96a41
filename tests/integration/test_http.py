"""gristd's HTTP endpoint against a live daemon fed by libgrist (issue P7):
the ready fd's http line, the JSON API (jobs, job, history with LTTB
downsampling: points requested = points returned), 400/404/405/414 with a
JSON error, /metrics checked by `promtool check metrics` and scraped by a
real Prometheus server that answers a PromQL query for a job's momentum,
the cardinality limit, and the page loaded in headless Chromium (DOM
checked, screenshot saved next to the test logs).

    PYTHONPATH=build/proto GRIST_LIB=build/client/libgrist.so \\
        /usr/bin/python3 tests/integration/test_http.py build/daemon/gristd
"""
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

if os.environ.get("GRISTD_WRAPPER"):
    print("skipped under the valgrind setup (Prometheus and Chromium are not run under memcheck)")
    sys.exit(77)

import pytest_util  # noqa: F401  (puts client/python on the path)
import numpy as np

from grist._native import Client, Session, group_seed, sketch_f32


def start(gristd, *extra):
    """gristd with --http on a free port; returns (proc, grpc address, http address)."""
    proc, ready = pytest_util.spawn_ready([gristd, "--listen", "127.0.0.1:0", "--http",
                                           "127.0.0.1:0", "--log-level", "warn", *extra])
    assert "grpc" in ready and "http" in ready, ready
    return proc, ready["grpc"], ready["http"]


def get(http, path, method="GET"):
    """(status, content type, body bytes)"""
    req = urllib.request.Request(f"http://{http}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def read_response(sock, buf=b"", head=False):
    """One HTTP/1.1 response from a raw socket, after the bytes already read
    (buf): (status, headers dict, body, the bytes read past it). head: the
    answer to HEAD, headers only."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, ("connection closed mid-response", buf)
        buf += chunk
    hdr, rest = buf.split(b"\r\n\r\n", 1)
    lines = hdr.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), lines[0]  # a response starts exactly here
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    n = 0 if head else int(headers["content-length"])
    while len(rest) < n:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    return status, headers, rest[:n], rest[n:]


def check_protocol(http):
    """HTTP/1.1 details on raw sockets: pipelined requests answered in order,
    HEAD without a body, 431 for oversized headers, the idle timeout."""
    import socket
    host, port = http.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b"GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n"
              b"HEAD /api/v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    st1, h1, b1, extra = read_response(s)
    assert st1 == 200 and json.loads(b1)["jobs"], (st1, b1[:200])
    # the HEAD answer: GET's headers (its Content-Length), no body ...
    st2, h2, _, extra = read_response(s, extra, head=True)
    assert st2 == 200 and int(h2["content-length"]) > 0, (st2, h2)
    # ... so the third response follows at once, no body bytes in between
    st3, _, b3, _ = read_response(s, extra)
    assert st3 == 200 and b"gristd_" in b3, st3
    s.close()
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    st, _, _, _ = read_response(s)
    assert st == 431, st
    s.close()
    # a request that never completes is closed after --http-idle-timeout (2 s here)
    s = socket.create_connection((host, int(port)), timeout=10)
    t0 = time.time()
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    assert s.recv(100) == b"", "a partial request was answered"
    waited = time.time() - t0
    assert 1.5 < waited < 8, waited
    s.close()
    print(f"protocol: 3 pipelined requests answered in order, HEAD without body, 431, "
          f"partial request closed after {waited:.1f} s")


def get_json(http, path, want=200):
    st, ct, body = get(http, path)
    assert st == want, (path, st, body[:300])
    assert ct.startswith("application/json"), ct
    return json.loads(body)


def feed(addr, job, steps, groups=("conv", "head"), m=256):
    """A real libgrist session submitting sketches of an AR(1) gradient."""
    client = Client(addr, queue_capacity=4096)
    sess = Session(client, job, [dict(name=g, n=4096, beta=0.9, lr=0.1) for g in groups],
                   sketch_dim=m, policy={"solve_every": 1, "min_steps": 2})
    assert sess.wait_ready(10)
    seeds = [group_seed(sess.job_seed, g) for g in range(len(groups))]
    rng = np.random.default_rng(1)
    g = rng.standard_normal((len(groups), 4096)).astype(np.float32)
    for t in range(1, steps + 1):
        g = (0.8 * g + 0.6 * rng.standard_normal(g.shape)).astype(np.float32)
        acc = np.zeros((len(groups), m))
        sq = np.zeros((len(groups), 1))
        for k in range(len(groups)):
            sketch_f32(seeds[k], g[k].ctypes.data, g.shape[1], 0, acc[k], sq[k], kind=sess.sketch_kind)
        sess.submit(t, acc.astype(np.float32), sq[:, 0], [32] * len(groups))
        if t % 5 == 0:  # libgrist batches what queued up: keep evaluations frequent
            assert sess.flush(10)
    return client, sess


def close(*sessions_and_clients):
    """Close libgrist sessions before their clients: close(s1, c1, s2, c2)."""
    for x in sessions_and_clients:
        x.close()


def wait_step(http, job, steps, timeout=60):
    """Until the job aggregated `steps` steps and a compute thread evaluated them all."""
    deadline = time.monotonic() + timeout
    path = "/api/v1/jobs/" + urllib.parse.quote(job, safe="")
    while time.monotonic() < deadline:
        st, _, body = get(http, path)
        if st == 200:
            j = json.loads(body)
            if j["job"]["step"] >= steps and all(g.get("steps", 0) >= steps for g in j["groups"]):
                return j
        time.sleep(0.1)
    raise AssertionError(f"job {job} did not reach step {steps}")


def check_api(http):
    jobs = get_json(http, "/api/v1/jobs")["jobs"]
    a = [j for j in jobs if j["id"] == "http a/1"][0]
    assert a["groups"] == 2 and a["world_size"] == 1 and a["sketch_dim"] == 256, a
    assert a["sketch_kind"] == "block", a  # the default of every session
    path = "/api/v1/jobs/" + urllib.parse.quote("http a/1", safe="")
    # the families are solved by a background thread at a lower priority:
    # on a loaded machine they may come some time after the last step
    deadline = time.time() + 60
    job = get_json(http, path)
    while not all("families" in g for g in job["groups"]) and time.time() < deadline:
        time.sleep(0.2)
        job = get_json(http, path)
    assert [g["name"] for g in job["groups"]] == ["conv", "head"]
    for g in job["groups"]:
        assert 0.0 <= g["momentum"] < 1.0 and g["lr_scale"] > 0
        assert len(g["candidates"]) == len(g["alignment"]) == len(g["alignment_se"]) > 3
        assert g["steps"] == 650
        assert g["families"]["trace"] > 0 and g["families"]["effective_rank"] >= 1, g["families"]
    q = "/api/v1/jobs/http%20a%2F1/history"
    full = get_json(http, q + "?group=conv&series=momentum&points=100000")
    n = len(full["steps"])
    # one evaluation per batch of steps the compute thread took at once: how
    # many depends on the machine's load, so the sizes asked follow n
    assert n >= 60 and full["steps"] == sorted(full["steps"]), n
    for points in (2, 3, n // 3, n - 1):
        h = get_json(http, f"{q}?group=1&series=noise_scale&points={points}")
        assert len(h["steps"]) == len(h["values"]) == points, (points, len(h["steps"]))
        assert h["steps"][0] == full["steps"][0] and h["steps"][-1] == full["steps"][-1]
    part = get_json(http, f"{q}?group=head&series=lr_scale&from=100&to=199&points=1000")
    inside = [s for s in full["steps"] if 100 <= s <= 199]  # fewer than asked: all of them
    assert part["steps"] == inside and len(inside) >= 1, (part["steps"], inside)
    assert len(get_json(http, f"{q}?points={n + 50}")["steps"]) == n  # fewer than asked: all
    assert all(v is None or math.isfinite(v) for v in part["values"])
    # errors: a JSON body with the status
    for path, code in [("/api/v1/jobs/nope", 404), (q + "?group=nope", 404), (q + "?group=7", 404),
                       (q + "?series=bogus", 400), (q + "?points=abc", 400), (q + "?points=1", 400),
                       (q + "?from=10&to=5", 400), ("/api/v1/jobs/%zz", 400), ("/nothing", 404),
                       ("/api/v1/jobs/http%20a%2F1/nothing", 404)]:
        err = get_json(http, path, want=code)
        assert err["status"] == code and err["error"], (path, err)
    st, _, body = get(http, "/api/v1/jobs", method="POST")
    assert st == 405 and json.loads(body)["status"] == 405
    st, _, _ = get(http, "/api/v1/jobs?x=" + "a" * 6000)
    assert st == 414, st
    print(f"api: {len(jobs)} jobs, history of {n} evaluations downsampled exactly, errors ok")


def pb_matches_json(msg, js, path="$"):
    """Every field of the protobuf message, walked from its descriptor, is in
    the JSON under its proto name with the same value (doubles exactly: the
    API writes 17 digits); an unset sub-message is absent. Returns the number
    of values compared."""
    from google.protobuf.descriptor import FieldDescriptor as F
    n = 0
    for f in msg.DESCRIPTOR.fields:
        where = f"{path}.{f.name}"
        if f.type == F.TYPE_MESSAGE and f.label != F.LABEL_REPEATED:
            if msg.HasField(f.name):
                assert f.name in js, (where, "missing")
                n += pb_matches_json(getattr(msg, f.name), js[f.name], where)
            else:
                assert f.name not in js, (where, "set in JSON, unset in gRPC")
            continue
        assert f.name in js, (where, "missing from the JSON", sorted(js))
        vals = list(getattr(msg, f.name)) if f.label == F.LABEL_REPEATED else [getattr(msg, f.name)]
        jvals = js[f.name] if f.label == F.LABEL_REPEATED else [js[f.name]]
        assert len(vals) == len(jvals), (where, len(vals), len(jvals))
        for k, (v, jv) in enumerate(zip(vals, jvals)):
            if f.type == F.TYPE_MESSAGE:
                n += pb_matches_json(v, jv, f"{where}[{k}]")
                continue
            if f.type == F.TYPE_ENUM:
                names = [e.name for e in f.enum_type.values]
                pre = os.path.commonprefix(names) if len(names) > 1 else ""
                pre = pre[:pre.rfind("_") + 1]
                v = f.enum_type.values_by_number[v].name[len(pre):].lower()
            elif f.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT) and not math.isfinite(v):
                v = None
            assert jv == v, (where, k, jv, v)
            n += 1
    return n


def check_json_is_grpc(addr, http):
    """The HTTP job view and job list are the gRPC GetJobResponse and
    JobBrief, field for field (pbjson.c writes them from the descriptors)."""
    import grpc
    pb = pytest_util.load_pb2()
    ch = grpc.insecure_channel(addr)
    get_job = ch.unary_unary("/grist.v1.Grist/GetJob",
                             request_serializer=pb.GetJobRequest.SerializeToString,
                             response_deserializer=pb.GetJobResponse.FromString)
    list_jobs = ch.unary_unary("/grist.v1.Grist/ListJobs",
                               request_serializer=pb.ListJobsRequest.SerializeToString,
                               response_deserializer=pb.ListJobsResponse.FromString)
    # the jobs are idle now (their feeds ended), so both reads see one state
    r = get_job(pb.GetJobRequest(job_id="http a/1"), timeout=10)
    js = get_json(http, "/api/v1/jobs/" + urllib.parse.quote("http a/1", safe=""))
    assert all(g.HasField("families") for g in r.groups), "families not solved yet"
    n = pb_matches_json(r, js)
    assert js["job"]["id"] == "http a/1" and js["job"]["sketch_dim"] == 256
    lj = list_jobs(pb.ListJobsRequest(), timeout=10)
    jl = {j["id"]: j for j in get_json(http, "/api/v1/jobs")["jobs"]}
    for b in lj.jobs:
        n += pb_matches_json(b, jl[b.job_id], f"jobs[{b.job_id}]")
    ch.close()
    print(f"json = grpc: {n} values of GetJobResponse and ListJobsResponse agree")


def check_metrics(http):
    st, ct, body = get(http, "/metrics")
    assert st == 200 and ct.startswith("text/plain; version=0.0.4"), (st, ct)
    text = body.decode()
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: sh deploy/setup.sh installs Debian's prometheus"
    p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                       env=pytest_util.foreign_env())
    assert p.returncode == 0, (p.stdout, p.stderr)
    for needle in ['gristd_group_momentum{job="http a/1",group="conv"}',
                   'gristd_group_effective_rank{job="http a/1",group="head"}',
                   "gristd_push_latency_seconds_bucket{le=\"+Inf\"}",
                   "gristd_solve_duration_seconds_count", "gristd_streams 2",
                   "# TYPE gristd_summaries_total counter"]:
        assert needle in text, needle
    count = [ln for ln in text.splitlines() if ln.startswith("gristd_solve_duration_seconds_count")]
    assert int(count[0].split()[1]) >= 60, count  # one per evaluation
    print(f"metrics: {len(text.splitlines())} lines, promtool check metrics passed")


def check_gristctl(gristd, addr, http):
    """gristctl (libgrist's query calls) against the same daemon: what it
    prints agrees with the JSON API, errors map to exit statuses."""
    ctl = pytest_util.gristctl(gristd)

    def run(*args, code=0):
        p = subprocess.run([ctl, "--address", addr, "--timeout", "5", *args], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == code, (args, p.returncode, p.stdout[-500:], p.stderr[-500:])
        return p.stdout

    jobs = json.loads(run("jobs", "--json"))["jobs"]
    assert {"http a/1", "http-b"} <= {j["id"] for j in jobs}, jobs
    assert "http a/1" in run("jobs")
    job = json.loads(run("job", "http a/1", "--json"))
    api = get_json(http, "/api/v1/jobs/http%20a%2F1")
    assert [g["name"] for g in job["groups"]] == ["conv", "head"]
    # gristctl writes the API's documents: the same keys and values throughout
    assert job == api, (job, api)
    listed = {j["id"]: j for j in json.loads(run("jobs", "--json"))["jobs"]}
    assert listed["http a/1"] == api["job"], (listed["http a/1"], api["job"])
    table = run("job", "http a/1")
    assert "conv" in table and "momentum" in table
    h = json.loads(run("history", "http a/1", "--group", "1", "--series", "noise_scale",
                       "--points", "50", "--json"))  # check_api saw >= 60 evaluations
    ha = get_json(http, "/api/v1/jobs/http%20a%2F1/history?group=1&series=noise_scale&points=50")
    assert len(h["steps"]) == 50 and h["steps"] == ha["steps"] and h["values"] == ha["values"]
    assert len(run("history", "http a/1", "--points", "10").strip().splitlines()) == 11
    lines = [ln for ln in run("watch", "http a/1", "--for", "1.5", "--json").splitlines() if ln]
    assert lines and json.loads(lines[0])["job"]["id"] == "http a/1", lines
    run("job", "nope", code=3)
    run("history", "http a/1", "--series", "bogus", code=3)
    run("history", "http a/1", "--group", "9", code=3)
    p = subprocess.run([ctl, "--address", f"127.0.0.1:{free_port()}", "--timeout", "2", "jobs"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "gristctl" in p.stderr, (p.returncode, p.stderr)
    run("frobnicate", code=2)
    print(f"gristctl: jobs, job, history (= the JSON API's downsampling), watch "
          f"({len(lines)} states in 1.5 s), exit statuses 1/2/3")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def check_prometheus(http):
    prom = shutil.which("prometheus")
    assert prom, "prometheus missing: sh deploy/setup.sh installs it"
    tmp = tempfile.mkdtemp()
    conf = os.path.join(tmp, "prometheus.yml")
    with open(conf, "w") as f:
        f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gristd\n"
                f"    static_configs:\n      - targets: ['{http}']\n")
    port = free_port()
    proc = pytest_util.spawn([prom, f"--config.file={conf}", f"--storage.tsdb.path={tmp}/data",
                              f"--web.listen-address=127.0.0.1:{port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=pytest_util.foreign_env())
    try:
        query = urllib.parse.quote('gristd_group_momentum{exported_job="http a/1",group="conv"}')
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "Prometheus never returned the series"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query={query}",
                                            timeout=5) as r:
                    res = json.load(r)["data"]["result"]
                if res:
                    break
            except (urllib.error.URLError, ConnectionError, KeyError):
                pass
            time.sleep(0.5)
        v = float(res[0]["value"][1])
        assert 0.0 <= v < 1.0, res
        # every query of the shipped Grafana dashboard parses and names series
        # gristd exports (the dashboard's $job variable set to the test job)
        dash = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "deploy",
                                           "grafana", "grist.json")))
        exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
        with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as r:
            exported = r.read().decode()
        for e in exprs:
            for name in re.findall(r"gristd_[a-z_]+", e):
                assert name in exported, (e, name)
            q = urllib.parse.quote(e.replace("$job", "http a/1"))
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query={q}",
                                        timeout=5) as r:
                assert json.load(r)["status"] == "success", e
        print(f"prometheus: scraped gristd, PromQL momentum of http a/1 conv = {v:.4f}; "
              f"the {len(exprs)} queries of deploy/grafana/grist.json evaluate")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def check_page(http, artifacts):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium missing: sh deploy/setup.sh installs it"
    st, ct, body = get(http, "/")
    assert st == 200 and ct.startswith("text/html") and b"<title>gristd</title>" in body
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--virtual-time-budget=10000", "--window-size=1300,1100", f"--user-data-dir={tempfile.mkdtemp()}"]
    page = f"http://{http}/#job=" + urllib.parse.quote("http a/1", safe="")
    p = subprocess.run(base + ["--dump-dom", page], capture_output=True, timeout=120,
                       env=pytest_util.foreign_env())
    dom = p.stdout.decode()
    assert 'data-job="http a/1"' in dom, dom[:2000]
    assert dom.count('class="group"') >= 2, "the selected job's groups are not drawn"
    assert "momentum over steps" in dom and ("<canvas" in dom or "uplot" in dom), dom[:3000]
    assert "live," in dom, "the page did not finish a refresh"
    shot = os.path.join(artifacts, "http-page.png")
    subprocess.run(base + [f"--screenshot={shot}", page], capture_output=True, timeout=120,
                   env=pytest_util.foreign_env())
    assert os.path.getsize(shot) > 10000, "screenshot missing or empty"
    print(f"page: DOM has the job and its charts ({'uPlot' if 'uplot' in dom else 'canvas'}); "
          f"screenshot {shot}")


def check_cardinality(gristd):
    proc, addr, http = start(gristd, "--metrics-max-jobs", "1")
    try:
        c1, s1 = feed(addr, "card-1", 5)
        c2, s2 = feed(addr, "card-2", 5)
        wait_step(http, "card-2", 5)
        wait_step(http, "card-1", 5)
        text = get(http, "/metrics")[2].decode()
        jobs = {ln.split('job="')[1].split('"')[0] for ln in text.splitlines()
                if ln.startswith("gristd_group_momentum{")}
        assert len(jobs) == 1, jobs
        assert "gristd_metrics_jobs_omitted 1" in text
        close(s1, c1, s2, c2)
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    print("cardinality: --metrics-max-jobs 1 keeps one job's series, counts the other")


def main():
    gristd = sys.argv[1]
    artifacts = os.path.join(os.path.dirname(os.path.abspath(gristd)), "..", "meson-logs")
    proc, addr, http = start(gristd, "--http-idle-timeout", "2")
    try:
        c1, s1 = feed(addr, "http a/1", 650)
        c2, s2 = feed(addr, "http-b", 30, groups=("all",))
        wait_step(http, "http a/1", 650)
        wait_step(http, "http-b", 30)
        check_api(http)
        check_json_is_grpc(addr, http)
        check_protocol(http)
        check_metrics(http)
        check_prometheus(http)
        check_page(http, artifacts)
        check_gristctl(gristd, addr, http)
        close(s1, c1, s2, c2)
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    check_cardinality(gristd)
    print("http: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
