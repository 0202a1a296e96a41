#!/usr/bin/python3
"""The reference of the daemon benchmark: a plain Python gradient-statistics
sidecar, written the way a user would write one with grpcio and NumPy. It
serves the same two RPCs bench-daemon uses (Attach and GetJob of
grist.v1.Grist) on the same wire messages, aggregates the ranks of a step,
runs the per-step statistics of tests/bench/numpy_step.py for every group
(K = 32 momentum candidates, m = 1024, L = 16 lags, a covariance folded to
256), picks the candidate with the largest alignment every `solve_every`
steps and pushes it to every rank of the job.

It does less than gristd (no noise model, no curvature, no families, no
standard errors, no limits or checks beyond the sizes), so the ratio
bench-daemon reports against it favours Python.

Started like gristd by the benchmark harness: it accepts gristd's command
line, uses only --ready-fd N (writes "grpc ADDRESS" there once it listens)
and serves on 127.0.0.1 at a free port. Run with /usr/bin/python3 and
PYTHONPATH=build/proto (tests/bench/sidecar.sh does both).
"""
import os
import queue
import sys
import threading
from concurrent import futures

import grpc
import numpy as np

from grist.v1 import grist_pb2 as pb
from grist.v1 import grist_pb2_grpc as pbg

K, L, MC, GAMMA = 32, 16, 256, 0.95
BETAS = np.array([0.0] + [1 - 2 ** (-j / 4) for j in range(1, K)])
NORM = np.sqrt(1 - BETAS ** 2)


class Group:
    """The statistics of one parameter group (numpy_step.py's step)."""

    def __init__(self, m):
        self.V = np.zeros((K, m))
        self.ring = np.zeros((L, m))
        self.head = 0
        self.J = np.zeros(K)
        self.E = np.zeros(K)
        self.acf = np.zeros(L + 1)
        self.mu = np.zeros(MC)
        self.Sigma = np.zeros((MC, MC))
        self.steps = 0

    def step(self, x):
        g = GAMMA
        self.V = BETAS[:, None] * self.V + x
        self.J = g * self.J + (1 - g) * NORM * (self.V @ x)
        self.E = g * self.E + (1 - g) * np.einsum("km,km->k", self.V, self.V)
        self.acf[0] = g * self.acf[0] + (1 - g) * (x @ x)
        self.acf[1:] = g * self.acf[1:] + (1 - g) * (self.ring @ x)
        self.ring[self.head] = x
        self.head = (self.head + 1) % L
        f = x.reshape(-1, MC).sum(axis=0)
        self.mu = g * self.mu + (1 - g) * f
        self.Sigma = g * self.Sigma + (1 - g) * np.outer(f, f)
        self.steps += 1


class Job:
    def __init__(self, hello):
        self.id = hello.job_id
        self.world = max(1, hello.world_size)
        self.m = hello.sketch_dim
        self.ngroups = len(hello.groups)
        self.groups = [Group(self.m) for _ in range(self.ngroups)]
        self.momentum = [g.beta for g in hello.groups]
        pol = hello.policy
        self.solve_every = pol.solve_every if pol.solve_every else 10
        self.open = {}  # step -> (sum of sketches per group, ranks seen)
        self.step = 0
        self.version = 0
        self.streams = []  # the queues of the job's Attach streams
        self.lock = threading.Lock()

    def submit(self, rank, summary):
        s = np.array([list(gs.sketch) for gs in summary.groups], dtype=np.float64)
        if s.shape != (self.ngroups, self.m):
            return False
        with self.lock:
            acc, seen = self.open.get(summary.step, (None, set()))
            if rank in seen:
                return True
            acc = s if acc is None else acc + s
            seen.add(rank)
            if len(seen) < self.world:
                self.open[summary.step] = (acc, seen)
                return True
            self.open.pop(summary.step, None)
            mean = acc / self.world
            for g in range(self.ngroups):
                self.groups[g].step(mean[g])
            self.step = summary.step
            if self.groups[0].steps % self.solve_every == 0:
                self.momentum = [float(BETAS[int(np.argmax(gr.J))]) for gr in self.groups]
                self.version += 1
                hp = pb.Hyperparams(version=self.version, step=self.step)
                for mom in self.momentum:
                    hp.groups.add(momentum=mom, lr_scale=1.0, reason="max alignment")
                msg = pb.ServerMessage(hyperparams=hp)
                for q in self.streams:
                    q.put(msg)
        return True


class Sidecar(pbg.GristServicer):
    def __init__(self):
        self.jobs = {}
        self.lock = threading.Lock()
        self.sessions = 0

    def Attach(self, request_iterator, context):
        out = queue.Queue()
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "hello":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "send Hello first")
        hello = first.hello
        with self.lock:
            job = self.jobs.get(hello.job_id)
            if job is None:
                job = self.jobs[hello.job_id] = Job(hello)
            self.sessions += 1
            session = self.sessions
            with job.lock:
                job.streams.append(out)
        rank = hello.rank

        def reader():
            try:
                for wm in request_iterator:
                    kind = wm.WhichOneof("msg")
                    summaries = [wm.summary] if kind == "summary" else (
                        list(wm.batch.summaries) if kind == "batch" else [])
                    for s in summaries:
                        job.submit(rank, s)
            finally:
                out.put(None)

        threading.Thread(target=reader, daemon=True).start()
        yield pb.ServerMessage(welcome=pb.Welcome(session_id=session, job_seed=1))
        while True:
            msg = out.get()
            if msg is None:
                break
            yield msg
        with job.lock:
            job.streams.remove(out)

    def GetJob(self, request, context):
        job = self.jobs.get(request.job_id)
        if job is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such job")
        with job.lock:
            r = pb.GetJobResponse()
            r.job.job_id = job.id
            r.job.world_size = job.world
            r.job.step = job.step
            r.job.version = job.version
            for g, gr in enumerate(job.groups):
                r.groups.add(name="g%d" % g, momentum=job.momentum[g], steps=gr.steps)
        return r


def main():
    argv = sys.argv[1:]
    fd = int(argv[argv.index("--ready-fd") + 1]) if "--ready-fd" in argv else None
    opts = [("grpc.max_receive_message_length", 64 << 20)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=256), options=opts,
                         maximum_concurrent_rpcs=None)
    pbg.add_GristServicer_to_server(Sidecar(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    if fd is not None:
        os.write(fd, ("grpc 127.0.0.1:%d\n" % port).encode())
        os.close(fd)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    main()
