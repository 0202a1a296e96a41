"""A sharded gristd on loopback (meson test --suite cluster): 3 replicas,
each `--shard I/3 --shard-peers A0,A1,A2 --state-dir DIR_I`. Real libgrist
clients given the replica list ("A0,A1,A2"):

- 30 jobs land where the rendezvous hash says, on exactly one replica;
- multi-rank jobs (4 ranks, each its own client) all on one replica;
- a client given only a wrong replica is redirected to the right one;
- a replica SIGKILLed and restarted on its state directory restores its
  jobs, and their workers re-attach by themselves;
- gristctl fans `jobs` out over the replicas, and so does any replica's
  GET /api/v1/cluster/jobs (a dead replica shows as an error, in 2 s).

    PYTHONPATH=build/proto GRIST_LIB=build/client/libgrist.so \\
        /usr/bin/python3 tests/cluster/test_cluster.py build/daemon/gristd
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import grpc  # noqa: E402

import pytest_util  # noqa: E402
from grist._native import Client, Session, shard_pick  # noqa: E402

pb = pytest_util.load_pb2()
N = 3


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def list_jobs(addr):
    with grpc.insecure_channel(addr) as ch:
        f = ch.unary_unary("/grist.v1.Grist/ListJobs",
                           request_serializer=pb.ListJobsRequest.SerializeToString,
                           response_deserializer=pb.ListJobsResponse.FromString)
        return {j.job_id: j for j in f(pb.ListJobsRequest(), timeout=10).jobs}




def feed(sess, steps, first=1):
    acc = np.zeros((1, 64), dtype=np.float32)
    rng = np.random.default_rng(first)
    for t in range(first, first + steps):
        sess.submit(t, acc + rng.standard_normal((1, 64)).astype(np.float32), np.ones(1), [8])
    assert sess.flush(10)


def main():
    gristd = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="grist-cluster-")
    ports = free_ports(N)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    peers = ",".join(addrs)

    def start(i):
        proc, ready = pytest_util.spawn_ready([
            gristd, "--listen", addrs[i], "--shard", f"{i}/{N}", "--shard-peers", peers,
            "--state-dir", os.path.join(tmp, f"state{i}"), "--snapshot-interval", "0.2",
            "--http", "127.0.0.1:0", "--log-level", "warn"])
        assert ready["grpc"] == addrs[i], ready
        https[i] = ready["http"]
        return proc

    https = [None] * N

    def cluster_jobs(i):
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://{https[i]}/api/v1/cluster/jobs", timeout=10) as r:
            return json.load(r), time.monotonic() - t0

    procs = [start(i) for i in range(N)]
    clients, sessions = [], {}
    try:
        # 30 jobs through one client given the list
        c = Client(peers, backoff_max_s=0.5)
        clients.append(c)
        jobs = [f"job-{k:02d}" for k in range(30)]
        for job in jobs:
            s = Session(c, job, [dict(name="w", n=1000, beta=0.9, lr=0.1)], sketch_dim=64)
            sessions[job] = [s]
        for job in jobs:
            s = sessions[job][0]
            assert s.wait_ready(10), (job, s.last_error())
            assert s.address == addrs[shard_pick(job, N)], (job, s.address)
            feed(s, 20)
        # multi-rank jobs: every rank its own client, all on the job's replica
        multi = [f"ddp-{k}" for k in range(3)]
        for job in multi:
            for r in range(4):
                cr = Client(peers, backoff_max_s=0.5)
                clients.append(cr)
                s = Session(cr, job, [dict(name="w", n=1000, beta=0.9, lr=0.1)], rank=r,
                            world_size=4, sketch_dim=64)
                sessions.setdefault(job, []).append(s)
            for s in sessions[job]:
                assert s.wait_ready(10), (job, s.last_error())
                assert s.address == addrs[shard_pick(job, N)]
        # a client given only a wrong replica is sent to the right one
        wrong_job = next(j for j in (f"lost-{k}" for k in range(100)) if shard_pick(j, N) != 0)
        cw = Client(addrs[0], backoff_max_s=0.5)
        clients.append(cw)
        sw = Session(cw, wrong_job, [dict(name="w", n=1000, beta=0.9, lr=0.1)], sketch_dim=64)
        sessions[wrong_job] = [sw]
        assert sw.wait_ready(10), sw.last_error()
        right = shard_pick(wrong_job, N)
        assert sw.address == addrs[right], (sw.address, right)
        st, msg = sw.last_error()
        assert st == 9 and f"shard {right} of {N}" in msg, (st, msg)  # FAILED_PRECONDITION
        # each replica holds exactly the jobs the hash gives it
        time.sleep(0.5)
        seen = {}
        for i, a in enumerate(addrs):
            mine = list_jobs(a)
            want = {j for j in sessions if shard_pick(j, N) == i}
            assert set(mine) == want, (i, sorted(mine), sorted(want))
            for j in mine:
                seen[j] = i
            for job in multi:
                if job in mine:
                    assert mine[job].world_size == 4 and mine[job].live_workers == 4, mine[job]
        counts = [sum(1 for j in jobs if seen[j] == i) for i in range(N)]
        assert sorted(seen) == sorted(sessions) and min(counts) >= 1, counts
        print(f"cluster: 30 jobs spread {counts} as the hash says, each on exactly one replica; "
              f"{len(multi)} 4-rank jobs each whole on one; a client given the wrong replica "
              f"redirected to shard {right}")
        # gristctl: jobs fan out over the list
        ctl = pytest_util.gristctl(gristd)
        p = subprocess.run([ctl, "--address", peers, "jobs", "--json"], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert sorted(j["id"] for j in json.loads(p.stdout)["jobs"]) == sorted(sessions)
        p = subprocess.run([ctl, "--address", peers, "job", wrong_job, "--json"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and wrong_job in p.stdout, p.stderr
        # any replica's JSON API answers for the whole cluster
        for i in range(N):
            view, _ = cluster_jobs(i)
            assert {j["id"]: j["shard"] for j in view["jobs"]} == seen, i
            assert [s["status"] for s in view["shards"]] == [0] * N, view["shards"]
        # SIGKILL the busiest replica; restart it on its state directory
        victim = max(range(N), key=lambda i: counts[i])
        time.sleep(0.6)  # three snapshot intervals: the fed steps are on disk
        before = {j: v.step for j, v in list_jobs(addrs[victim]).items()}
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(timeout=30)
        other = (victim + 1) % N
        view, took = cluster_jobs(other)  # the dead replica: an error for its shard, not a hang
        assert view["shards"][victim]["status"] != 0 and took < 5, (view["shards"], took)
        assert all(s["status"] == 0 for k, s in enumerate(view["shards"]) if k != victim)
        assert {j["shard"] for j in view["jobs"]} == set(range(N)) - {victim}
        t0 = time.monotonic()
        procs[victim] = start(victim)
        ready_s = time.monotonic() - t0
        after = list_jobs(addrs[victim])
        assert set(after) == set(before), (sorted(after), sorted(before))
        assert all(after[j].step >= 1 for j in after if j in jobs), after
        lost = [before[j] - after[j].step for j in before if j in jobs]
        # the workers re-attach by themselves (backoff at most 0.5 s)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            live = list_jobs(addrs[victim])
            if all(live[j].live_workers == len(sessions[j]) for j in live):
                break
            time.sleep(0.1)
        assert all(live[j].live_workers == len(sessions[j]) for j in live), \
            {j: (live[j].live_workers, len(sessions[j])) for j in live}
        reattach_s = time.monotonic() - t0
        for j in live:
            if j in jobs:  # and go on from where they were
                feed(sessions[j][0], 5, first=21)
        time.sleep(0.3)
        grown = list_jobs(addrs[victim])
        assert all(grown[j].step >= 25 for j in grown if j in jobs), grown
        print(f"cluster: /api/v1/cluster/jobs of every replica lists all {len(seen)} jobs with "
              f"their shard; with replica {victim} dead it answers in {took:.2f} s, that shard "
              "an error")
        print(f"cluster: replica {victim} SIGKILLed with {len(before)} jobs, restarted on its "
              f"state dir: ready {ready_s:.2f} s, every job restored (steps lost max "
              f"{max(lost) if lost else 0}), all workers back {reattach_s:.2f} s after the restart")
    finally:
        for ss in sessions.values():
            for s in ss:
                s.close()
        for c in clients:
            c.close()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in procs]
        shutil.rmtree(tmp, ignore_errors=True)
    assert codes == [0] * N, codes
    check_tokens(gristd)
    check_disagreeing(gristd)
    print("cluster: ok")
    return 0


def check_disagreeing(gristd):
    """Two replicas that disagree (each says the job is the other's, as during
    a change of N): the session follows the first redirect at once and the
    next ones only after its backoff, instead of bouncing flat out."""
    ports = free_ports(2)
    a, b = [f"127.0.0.1:{p}" for p in ports]
    job = next(j for j in (f"bounce-{k}" for k in range(100)) if shard_pick(j, 2) == 1)
    procs, https = [], []
    for me, peers in ((a, f"{a},{b}"), (b, f"{b},{a}")):  # both are shard 0 of 2
        proc, ready = pytest_util.spawn_ready([gristd, "--listen", me, "--shard", "0/2",
                                               "--shard-peers", peers, "--http", "127.0.0.1:0",
                                               "--log-level", "warn"])
        procs.append(proc)
        https.append(ready["http"])
    c = Client(a, backoff_max_s=0.5)
    s = Session(c, job, [dict(name="w", n=1000, beta=0.9, lr=0.1)], sketch_dim=64)
    time.sleep(3.0)
    st = s.stats()
    s.close()
    c.close()
    total = 0
    for h in https:
        with urllib.request.urlopen(f"http://{h}/metrics", timeout=10) as r:
            for ln in r.read().decode().splitlines():
                if ln.startswith("gristd_shard_redirects_total "):
                    total += int(ln.split()[1])
    for p in procs:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    # backoff 0.1 s doubling to 0.5 s: about a dozen attempts in 3 s, not thousands
    assert 2 <= total <= 40, (total, st)
    print(f"cluster: two disagreeing replicas: {total} redirects in 3 s (backoff), not a loop")


def check_tokens(gristd):
    """The cluster view passes the caller's token on: 2 replicas with
    --tokens, a reader of "a-*" sees only a-* jobs of both, none of b-*."""
    tmp = tempfile.mkdtemp(prefix="grist-cluster-tok-")
    tokens = {"w": "cluster-worker-0123456789", "r": "cluster-reader-a-0123456789"}
    tf = os.path.join(tmp, "tokens")
    with open(tf, "w") as f:
        f.write(f"{tokens['w']} worker *\n{tokens['r']} reader a-*\n")
    os.chmod(tf, 0o600)
    ports = free_ports(2)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    procs, https = [], []
    for i in range(2):
        proc, ready = pytest_util.spawn_ready([
            gristd, "--listen", addrs[i], "--shard", f"{i}/2", "--shard-peers", ",".join(addrs),
            "--http", "127.0.0.1:0", "--tokens", tf, "--log-level", "warn"])
        procs.append(proc)
        https.append(ready["http"])
    c = Client(",".join(addrs), token=tokens["w"])
    jobs = [f"{p}-{k}" for p in ("a", "b") for k in range(6)]
    ss = [Session(c, j, [dict(name="w", n=1000, beta=0.9, lr=0.1)], sketch_dim=64) for j in jobs]
    try:
        for s in ss:
            assert s.wait_ready(10), s.last_error()
        assert {shard_pick(j, 2) for j in jobs if j.startswith("a-")} == {0, 1}, "a-* on one shard"
        req = urllib.request.Request(f"http://{https[0]}/api/v1/cluster/jobs",
                                     headers={"Authorization": "Bearer " + tokens["r"]})
        with urllib.request.urlopen(req, timeout=10) as r:
            view = json.load(r)
        got = sorted(j["id"] for j in view["jobs"])
        assert got == sorted(j for j in jobs if j.startswith("a-")), got
        assert [s["status"] for s in view["shards"]] == [0, 0], view["shards"]
        try:
            urllib.request.urlopen(f"http://{https[0]}/api/v1/cluster/jobs", timeout=10)
            raise AssertionError("the cluster view answered without a token")
        except urllib.error.HTTPError as e:
            assert e.code == 401, e.code
    finally:
        for s in ss:
            s.close()
        c.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"cluster: with --tokens the cluster view passes the token on: a reader of a-* sees "
          f"the {len(got)} a-* jobs of both replicas and no b-*; without a token 401")


if __name__ == "__main__":
    sys.exit(main())
