"""gristd from Python: grpcio with the classes protoc generated from
proto/grist/v1/grist.proto during the build (PYTHONPATH = build/proto).

Starts the real daemon on 127.0.0.1:0 with a readiness pipe, attaches a
2-rank job whose sketches are computed by a NumPy implementation of
MATH.md section 2 (so it also checks the Python side agrees with the C
sketch through the daemon), waits for pushed hyperparameters, queries the
job, and checks that a non-finite summary ends its stream with
INVALID_ARGUMENT while the other rank keeps working. Run with
/usr/bin/python3; exit 0 on success."""
import os
import queue
import sys
import threading

import grpc
import numpy as np

from grist.v1 import grist_pb2 as pb
from grist.v1 import grist_pb2_grpc as pbg

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sketch_ref import numpy_sketch  # noqa: E402
from pytest_util import start_gristd  # noqa: E402  (imported after grist.v1: it puts
#                                      client/python, whose `grist` would shadow it, on the path)

def sketch(x, job_seed, group, m):
    return numpy_sketch(x, job_seed, group, m).astype(np.float32)


class Worker:
    """One Attach stream: requests from a queue, responses collected by a thread."""

    def __init__(self, stub, hello):
        self.q = queue.Queue()
        self.q.put(pb.WorkerMessage(hello=hello))
        self.responses = queue.Queue()
        self.call = stub.Attach(iter(self.q.get, None))
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for msg in self.call:
                self.responses.put(msg)
        except grpc.RpcError as e:
            self.responses.put(e)
        self.responses.put(None)

    def send(self, msg):
        self.q.put(msg)

    def close(self):
        self.q.put(None)


def main():
    gristd = sys.argv[1]
    proc, addr = start_gristd(gristd, "127.0.0.1:0")
    ok = False
    try:
        ch = grpc.insecure_channel(addr)
        stub = pbg.GristStub(ch)
        n, m, W, rho, steps = 3000, 256, 2, 0.8, 300
        # a synthetic AR(1) stream, not an optimizer's trajectory: the first-order
        # rule (whose optimum is beta = rho, docs/MATH.md T1) through the daemon
        pol = pb.Policy(solve_every=10, noise_correction="workers", rule="alignment")
        workers = []
        for r in range(W):
            hello = pb.Hello(job_id="py-job", rank=r, world_size=W, sketch_dim=m, policy=pol,
                             groups=[pb.GroupSpec(name="all", num_elements=n,
                                                  optimizer=pb.OPTIMIZER_KIND_SGD, lr=0.1,
                                                  beta=0.3)])
            workers.append(Worker(stub, hello))
        seeds = []
        for w in workers:
            first = w.responses.get(timeout=10)
            assert first.WhichOneof("msg") == "welcome", first
            seeds.append(first.welcome.job_seed)
            assert first.welcome.policy.noise_correction == "workers"
        assert seeds[0] == seeds[1]
        rng = np.random.default_rng(3)
        g = rng.standard_normal(n)
        for t in range(1, steps + 1):
            g = rho * g + np.sqrt(1 - rho * rho) * rng.standard_normal(n)
            for w in workers:
                obs = g + 0.5 * rng.standard_normal(n)
                s = sketch(obs, seeds[0], 0, m)
                w.send(pb.WorkerMessage(summary=pb.Summary(step=t, groups=[
                    pb.GroupSummary(sq_norm=float(obs @ obs), sketch=s.tolist(), batch_size=16)])))
        # the daemon evaluated every step: wait on the query API, then read the push
        for _ in range(1000):
            job = stub.GetJob(pb.GetJobRequest(job_id="py-job"), timeout=10)
            if job.groups and job.groups[0].steps >= steps:
                break
            threading.Event().wait(0.01)
        assert job.groups[0].steps == steps, job
        assert job.job.version >= 1
        latest = None
        while latest is None or latest.hyperparams.version < job.job.version:
            latest = workers[0].responses.get(timeout=10)
            assert not isinstance(latest, Exception), latest
        beta = latest.hyperparams.groups[0].momentum
        print(f"python client: version {latest.hyperparams.version}, momentum {beta:.3f} (rho {rho})")
        assert abs(beta - rho) <= 0.07, beta
        # a NaN summary ends rank 1's stream with INVALID_ARGUMENT ...
        bad = np.zeros(m, dtype=np.float32)
        bad[5] = np.nan
        workers[1].send(pb.WorkerMessage(summary=pb.Summary(step=steps + 1, groups=[
            pb.GroupSummary(sq_norm=1.0, sketch=bad.tolist(), batch_size=16)])))
        while True:
            msg = workers[1].responses.get(timeout=10)
            if isinstance(msg, grpc.RpcError):
                assert msg.code() == grpc.StatusCode.INVALID_ARGUMENT, msg
                assert "sketch[5]" in msg.details(), msg.details()
                break
            assert msg is not None, "stream ended without a status"
        # ... while the job and rank 0 carry on
        job = stub.GetJob(pb.GetJobRequest(job_id="py-job"), timeout=10)
        assert job.job.step == steps
        try:
            stub.GetJob(pb.GetJobRequest(job_id="nope"), timeout=10)
            raise AssertionError("unknown job answered")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND
        for w in workers:
            w.close()
        ok = True
    finally:
        proc.terminate()
        rc = proc.wait(timeout=30)
        assert rc == 0, f"gristd exited {rc}"
    print("python client: ok" if ok else "python client: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
