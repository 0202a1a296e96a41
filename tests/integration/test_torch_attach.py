"""Real PyTorch training attached to the real gristd (MATH/ARCHITECTURE
worker side): pushes arrive and are applied to param_groups, the loss falls,
killing the daemon mid-run does not disturb training (it keeps the last
hyperparameters) and a restarted daemon is re-attached to. The sketch run
on libgrist's thread during optimizer.step() equals the synchronous one.
Then the DDP
example's setup: 2 ranks (gloo, started by torch.multiprocessing.spawn)
attach to one job through the DDP communication hook, and the daemon sees
two workers per step (worker noise > 0).

    PYTHONPATH=build/proto GRIST_LIB=build/client/libgrist.so \
        /usr/bin/python3 tests/integration/test_torch_attach.py build/daemon/gristd
"""
import hashlib
import os
import signal
import sys
import tempfile
import time

if os.environ.get("GRISTD_WRAPPER"):
    # meson's valgrind setup runs this interpreter under memcheck, where
    # PyTorch and SciPy do not initialise; gristd is checked there by the C
    # integration tests
    print("skipped under the valgrind setup")
    sys.exit(77)

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pytest_util import get_job, start_gristd, wait_step

import grist.torch  # noqa: E402  (path set by pytest_util)
from sklearn.datasets import load_digits  # noqa: E402


def digits():
    X, y = load_digits(return_X_y=True)
    return torch.from_numpy((X / 16.0).astype(np.float32)), torch.from_numpy(y)


def net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def test_single(gristd):
    sock = os.path.join(tempfile.mkdtemp(), "gristd.sock")
    addr = "unix:" + sock
    proc, _ = start_gristd(gristd, addr)
    X, y = digits()
    model = net(0)
    opt = torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[2].parameters()}],
                          lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=100, gamma=0.5)
    session = grist.torch.attach(opt, job="torch-test", address=addr, sketch_dim=256,
                                 policy={"solve_every": 5, "min_steps": 5}, wait_s=10)
    g = torch.Generator().manual_seed(0)
    losses, killed_at, restarted = [], None, None
    version_at_kill = 0
    import time
    deadline = None
    step = 0
    while True:
        step += 1
        if restarted and step > restarted + 100:
            # train on until the restarted daemon was re-attached to and
            # has pushed to us (libgrist's backoff decides when), 30 s at most
            if session.stats()["attaches"] >= 2 and session.version > version_at_kill:
                break
            if deadline is None:
                deadline = time.monotonic() + 30
            assert time.monotonic() < deadline, session.stats()
        idx = torch.randint(0, len(X), (32,), generator=g)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        opt.step()
        session.step(batch_size=32)
        sched.step()
        losses.append(loss.item())
        if killed_at is None and step >= 150 and (session.version >= 1 or step >= 3000):
            # the daemon dies mid-run, once it has pushed (a slow machine may
            # need more than 150 steps for the first push to come back)
            version_at_kill = session.version
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at = step
            momentum_at_kill = [gr["momentum"] for gr in opt.param_groups]
        if killed_at and step == killed_at + 70:  # and comes back on the same address
            proc, _ = start_gristd(gristd, addr)
            restarted = step
        if killed_at and not restarted:
            # training goes on with the last hyperparameters received
            assert [gr["momentum"] for gr in opt.param_groups] == momentum_at_kill
    st = session.stats()
    print(f"single: {step} steps, pushes received {st['received']}, attaches {st['attaches']}, "
          f"failures {st['failures']}, sent {st['sent']}, dropped {st['dropped']}, "
          f"momentum {[round(gr['momentum'], 3) for gr in opt.param_groups]}")
    assert version_at_kill >= 1, "no push before the daemon was killed"
    assert st["attaches"] >= 2, st        # re-attached after the restart
    assert st["failures"] >= 1, st
    hp_version, _, hp = session.session.latest()
    assert hp is not None
    for gr, h in zip(opt.param_groups, hp):  # the newest push is what the optimizer uses
        assert abs(gr["momentum"] - h["momentum"]) < 1e-12
    # lr_scale never leaks into the scheduler's lr: StepLR halves it every 100
    # steps (the loop ends at the top of iteration `step`: step - 1 were run)
    done = step - 1
    assert abs(opt.param_groups[0]["lr"] - 0.05 * 0.5 ** (done // 100)) < 1e-12, (done, opt.param_groups[0]["lr"])
    assert np.mean(losses[-30:]) < 0.5 * np.mean(losses[:30]), (losses[:30], losses[-30:])
    # the restarted daemon knows the job again, with steps after the restart
    job = get_job(addr, "torch-test")
    assert job.job.step > 0
    session.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_async_sketch(gristd):
    """The sketch begun at optimizer.step() on libgrist's thread (SGD's
    default) is the sketch of that step: two identical replicas attached as
    ranks 0 (async) and 1 (sync) of one job send identical summaries, so the
    daemon's worker noise, which measures how the ranks' sketches of a step
    differ, stays exactly 0. No solves run (min_steps above the run), so no
    push makes the replicas diverge. Then a gradient changed in place between
    optimizer.step() and session.step() is detected: the sketch is discarded,
    and after three such steps the session sketches synchronously."""
    proc, addr = start_gristd(gristd, "127.0.0.1:0")
    X, y = digits()
    models = [net(0), net(0)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in models]
    sessions = [grist.torch.attach(o, job="async-test", address=addr, sketch_dim=256, rank=r,
                                   world_size=2, policy={"min_steps": 100000}, wait_s=10,
                                   async_sketch=(r == 0))
                for r, o in enumerate(opts)]
    assert sessions[0].async_sketch and not sessions[1].async_sketch
    g = torch.Generator().manual_seed(1)
    for step in range(60):
        idx = torch.randint(0, len(X), (32,), generator=g)
        for m, o, s in zip(models, opts, sessions):
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(X[idx]), y[idx]).backward()
            o.step()
            s.step(batch_size=32)
    job = wait_step(addr, "async-test", 60)
    gs = job.groups[0]
    print(f"async: step {job.job.step}, world {job.job.world_size}, noise {gs.noise!r}, "
          f"discarded {sessions[0].discarded}")
    assert sessions[0].discarded == 0
    assert job.job.step == 60 and job.job.world_size == 2
    assert gs.noise == 0.0, gs.noise  # bit-identical sketches from both ranks
    # in-place changes after optimizer.step(): discarded, then synchronous
    s0, o0, m0 = sessions[0], opts[0], models[0]
    sent = s0.stats()["submitted"]
    import warnings
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for step in range(5):
            o0.zero_grad()
            torch.nn.functional.cross_entropy(m0(X[:32]), y[:32]).backward()
            o0.step()
            o0.zero_grad(set_to_none=False)  # in place, while the sketch may run
            s0.step(batch_size=32)
    assert s0.discarded == 3, s0.discarded
    assert not s0.async_sketch
    assert any("synchronously" in str(x.message) for x in w), [str(x.message) for x in w]
    assert s0.stats()["submitted"] == sent + 2  # the two synchronous steps
    for s in sessions:
        s.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def ddp_rank(rank, world, port, addr, out, radius=False):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    X, y = digits()
    model = torch.nn.parallel.DistributedDataParallel(net(0))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    policy = {"solve_every": 5, "min_steps": 5, "noise_correction": "workers"}
    if radius:  # an absolute lr pushed: rank 0's broadcast must carry it
        policy.update(lr_coupling="radius", radius=1e-3)
    session = grist.torch.attach(opt, job="ddp-radius" if radius else "ddp-test", address=addr,
                                 sketch_dim=256, policy=policy, ddp_model=model, wait_s=10)
    assert session.ngroups == 1
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own batches
    step = 0
    # 150 steps, then on until a push arrived; rank 0 broadcasts pushes at
    # the same step to both ranks, so both leave the loop together
    pushed, checked = None, 0
    while step < 150 or (not session.history and step < 2000) or (radius and not checked
                                                                  and step < 3000):
        step += 1
        idx = torch.randint(0, len(X), (32,), generator=g)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        opt.step()
        hp = session.step(batch_size=32)
        if pushed is not None:  # the step after a push ran at the pushed lr
            assert abs(session._applied[0, 0] - pushed) <= 1e-12 * pushed, (session._applied, pushed)
            checked += 1
        pushed = hp[0].get("lr") if radius and hp and hp[0].get("lr", 0) > 0 else None
    if radius:
        # both ranks see the same broadcasts at the same steps: the same count
        out.put((rank, checked, opt.param_groups[0]["lr"]))
        dist.barrier()
        session.close()
        dist.destroy_process_group()
        return
    wait_step(addr, "ddp-test", step)  # both ranks' last step reached the daemon
    st = session.stats()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy().tobytes()
    out.put((rank, st["sent"], st["received"], opt.param_groups[0]["momentum"],
             session.history, hashlib.sha1(flat).hexdigest(), step))
    dist.barrier()
    session.close()
    dist.destroy_process_group()


def test_ddp(gristd):
    proc, addr = start_gristd(gristd, "127.0.0.1:0")
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    mp.spawn(ddp_rank, args=(2, port, addr, out), nprocs=2, join=True)
    res = sorted(out.get() for _ in range(2))
    print("ddp:", res)
    job = get_job(addr, "ddp-test")
    gs = job.groups[0]
    print(f"ddp: job world {job.job.world_size}, step {job.job.step}, steps evaluated {gs.steps}, "
          f"noise {gs.noise:.4g}, noise scale {gs.noise_scale:.4g}, late {job.job.late_summaries}")
    assert job.job.world_size == 2
    assert res[0][6] == res[1][6] and job.job.step == res[0][6], (job.job.step, res)
    assert gs.noise > 0  # worker noise needs both ranks' local sketches of a step
    assert all(r[1] > 100 for r in res), res
    assert res[0][3] == res[1][3], res  # both ranks apply the same pushed momentum
    # ... at the same steps (rank 0 broadcasts them), so the replicas stay
    # bit-identical: DDP averages gradients, not momentum changes
    assert res[0][4] == res[1][4] and len(res[0][4]) >= 1, (res[0][4], res[1][4])
    assert res[0][5] == res[1][5], "DDP replicas diverged"
    # lr_coupling radius under DDP: the absolute lr travels in rank 0's
    # broadcast and is in force on every rank the step after
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    mp.spawn(ddp_rank, args=(2, port, addr, out, True), nprocs=2, join=True)
    res = sorted(out.get() for _ in range(2))
    print("ddp radius: pushed lr checked in force", res)
    assert res[0][1] > 0 and res[0][1] == res[1][1], res
    assert res[0][2] == res[1][2] == 0.05, res  # the user's lr is untouched
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0

def test_policy(gristd):
    """Every Policy field reaches the daemon through libgrist: an explicit
    candidate list (the paper's discrete {0.5, 0.9, 0.99}) is the grid the
    job evaluates and every pushed momentum is one of them; a value the
    daemon refuses raises ValueError with its message; an unknown key too."""
    proc, addr = start_gristd(gristd, "127.0.0.1:0")
    X, y = digits()
    model = net(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    paper = [0.5, 0.9, 0.99]
    session = grist.torch.attach(opt, job="policy-test", address=addr, sketch_dim=256,
                                 policy={"candidates": paper, "solve_every": 5, "min_steps": 5,
                                         "j_ema": 0.8, "hysteresis_h": 1, "hysteresis_z": 0.5,
                                         "ema_gamma": 0.9, "select_on": "train"},
                                 wait_s=10)
    g = torch.Generator().manual_seed(1)
    step = 0
    # 80 steps, then on until a push arrived (summaries and pushes are
    # asynchronous: a fast loop may end before the first push is back)
    while step < 80 or (not session.history and step < 2000):
        step += 1
        idx = torch.randint(0, len(X), (32,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
        session.step(batch_size=32)
    gs = wait_step(addr, "policy-test", step).groups[0]
    print(f"policy: candidates {list(gs.candidates)}, pushes {session.history[-3:]}")
    assert list(gs.candidates) == paper, list(gs.candidates)
    assert session.history and all(m in paper for _, ms, _ in session.history for m in ms), \
        session.history
    session.close()
    for bad, word in (({"j_ema": 1.5}, "j_ema"), ({"mode": "sideways"}, "mode"),
                      ({"candidates": [0.5, 1.2]}, "attach")):
        try:
            grist.torch.attach(opt, job="policy-bad", address=addr, policy=bad, wait_s=5)
        except (ValueError, grist.torch.GristError) as e:
            print(f"policy: {bad} -> {e}")
            assert word in str(e), e
        else:
            raise AssertionError(f"{bad} was accepted")
    try:
        grist.torch.attach(opt, job="policy-bad", address=addr, policy={"jema": 0.5})
    except ValueError as e:
        assert "jema" in str(e), e
    else:
        raise AssertionError("an unknown policy key was accepted")
    # lr_coupling radius pushes an absolute lr: grist.torch applies exactly it
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    session = grist.torch.attach(opt, job="radius-test", address=addr, sketch_dim=256,
                                 policy={"lr_coupling": "radius", "radius": 1e-3, "solve_every": 5,
                                         "min_steps": 5}, wait_s=10)
    pushed, checked, step = None, False, 0
    # 120 steps, then on until a pushed lr was seen in force (a slow machine
    # may not have the first push back within 120 steps)
    while step < 120 or (not checked and step < 3000):
        step += 1
        idx = torch.randint(0, len(X), (32,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
        hp = session.step(batch_size=32)
        if pushed is not None:  # the step after a push ran at the pushed lr
            assert abs(session._applied[0, 0] - pushed) <= 1e-12 * pushed, (session._applied, pushed)
            checked = True
        pushed = hp[0]["lr"] if hp and hp[0]["lr"] > 0 else None
    print(f"radius: lr in force {session._applied[0, 0]:.5f} (configured 0.05)")
    assert checked and opt.param_groups[0]["lr"] == 0.05  # the user's lr is untouched
    session.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_no_step_lost(gristd):
    """A fast 300-step loop attached without waiting for the daemon: the job
    seed comes from the job id (no Welcome needed to sketch), the queue holds
    what the stream has not sent yet, close() flushes it. Every step, with the
    applied lr and beta, reaches the daemon."""
    sock = os.path.join(tempfile.mkdtemp(), "gristd.sock")
    addr = "unix:" + sock
    proc, _ = start_gristd(gristd, addr)
    try:
        X, y = digits()
        model = net(1)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        session = grist.torch.attach(opt, job="fast-300", address=addr, sketch_dim=256)
        assert session.session.job_seed != 0  # known before any round trip
        g = torch.Generator().manual_seed(1)
        for t in range(300):
            idx = torch.randint(0, len(X), (16,), generator=g)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
            session.step(batch_size=16)
        st = session.stats()
        session.close()
        job = wait_step(addr, "fast-300", 300, timeout_s=20)
        print(f"no step lost: submitted {st['submitted']}, dropped {st['dropped']}, "
              f"daemon step {job.job.step}, late {job.job.late_summaries}")
        assert st["submitted"] == 300 and st["dropped"] == 0
        assert job.job.step == 300
        gs = job.groups[0]
        assert gs.steps == 300, gs.steps  # every step applied to the statistics
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_optimizers(gristd):
    """Every torch.optim optimizer with a momentum or beta1 attaches and trains:
    NAdam, RAdam, RMSprop with momentum, and Adam with an LR scheduler created
    after attach (no call-order warning, its step count kept), two param
    groups, gradient accumulation over two backward passes. Optimizers
    without one get a clear error."""
    import warnings
    sock = os.path.join(tempfile.mkdtemp(), "gristd.sock")
    addr = "unix:" + sock
    proc, _ = start_gristd(gristd, addr)
    try:
        X, y = digits()
        makers = {
            "nadam": lambda p: torch.optim.NAdam(p, lr=0.003),
            "radam": lambda p: torch.optim.RAdam(p, lr=0.003),
            "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.001, momentum=0.9),
            "adam": lambda p: torch.optim.Adam(p, lr=0.003),
        }
        for name, make in makers.items():
            model = net(2)
            opt = make([{"params": model[0].parameters()}, {"params": model[2].parameters()}])
            session = grist.torch.attach(opt, job=f"opt-{name}", address=addr, sketch_dim=256,
                                         policy={"solve_every": 5, "min_steps": 5}, wait_s=10)
            assert session.kind == name, session.kind
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.5)  # after attach
            g = torch.Generator().manual_seed(2)
            losses = []
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for t in range(120):
                    opt.zero_grad()
                    for _ in range(2):  # gradient accumulation
                        idx = torch.randint(0, len(X), (16,), generator=g)
                        loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx]) / 2
                        loss.backward()
                    b1_in_force = opt.param_groups[0].get("betas", (0.0,))[0]
                    opt.step()
                    session.step(batch_size=32)
                    sched.step()
                    losses.append(loss.item() * 2)
            sw = [str(w.message) for w in caught if "lr_scheduler" in str(w.message)]
            assert not sw, f"{name}: {sw}"
            assert sched.last_epoch == 120 and opt._step_count == 120, (sched.last_epoch,
                                                                       opt._step_count)
            assert abs(opt.param_groups[0]["lr"] / makers_lr(name) - 0.25) < 1e-9  # 2 halvings
            applied = session._applied.copy()
            session.close()
            job = wait_step(addr, f"opt-{name}", 120, timeout_s=20)
            # aggregated is not yet evaluated: the compute thread may still hold
            # the last steps (a loaded machine); wait for it, bounded
            deadline = time.monotonic() + 20
            while (min(gr.steps for gr in job.groups) < 120 and time.monotonic() < deadline):
                time.sleep(0.05)
                job = get_job(addr, f"opt-{name}")
            assert job.groups[0].steps == 120 and job.groups[1].steps == 120, \
                (name, [gr.steps for gr in job.groups])
            early, late = np.mean(losses[:20]), np.mean(losses[-20:])
            print(f"optimizer {name}: loss {early:.3f} -> {late:.3f}, beta applied "
                  f"{applied[0, 1]:.4f}, update scale {applied[0, 3]:.4f}, "
                  f"pushes {session.history[:3]}")
            assert late < early, (name, early, late)
            if name == "nadam":  # what it applied: the schedule mu_k = b1 (1 - 0.96^(k psi) / 2)
                mu = b1_in_force * (1 - 0.5 * 0.96 ** (120 * 0.004))
                assert abs(applied[0, 1] - mu) < 1e-9, (applied[0], mu)
            if name == "rmsprop":
                assert applied[0, 1] == opt.param_groups[0]["momentum"]
        for bad, msg in ((lambda p: torch.optim.Adagrad(p), "Adagrad"),
                         (lambda p: torch.optim.RMSprop(p, momentum=0.9, centered=True),
                          "centered"),
                         (lambda p: torch.optim.Adam(p, amsgrad=True), "amsgrad")):
            try:
                grist.torch.attach(bad(net(0).parameters()), job="opt-bad", address=addr)
            except TypeError as e:
                assert msg in str(e), e
                print(f"optimizer refused: {e}")
            else:
                raise AssertionError(f"{msg} was accepted")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_validation(gristd):
    """session.validate(closure, every=N): a held-out gradient every N steps
    reaches the daemon as a validation summary, the training gradients are
    restored; select_on = validation without it warns."""
    import warnings
    sock = os.path.join(tempfile.mkdtemp(), "gristd.sock")
    addr = "unix:" + sock
    proc, _ = start_gristd(gristd, addr)
    try:
        X, y = digits()
        Xv, yv = X[-200:], y[-200:]
        model = net(3)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        session = grist.torch.attach(opt, job="val", address=addr, sketch_dim=256, wait_s=10,
                                     policy={"select_on": "validation", "solve_every": 5,
                                             "min_steps": 5})
        session.validate(lambda: torch.nn.functional.cross_entropy(model(Xv), yv), every=5)
        g = torch.Generator().manual_seed(3)
        for t in range(100):
            idx = torch.randint(0, len(X) - 200, (16,), generator=g)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
            before = [p.grad.clone() for p in model.parameters()]
            session.step(batch_size=16)
            assert all(torch.equal(a, p.grad) for a, p in zip(before, model.parameters()))
        session.close()
        job = wait_step(addr, "val", 100, timeout_s=20)
        print(f"validation: {session.validations} held-out sketches, daemon counted "
              f"{job.job.validation_summaries}, {1e3 * session.validation_s / 20:.2f} ms each")
        assert session.validations == 20 and job.job.validation_summaries == 20
        opt2 = torch.optim.SGD(net(4).parameters(), lr=0.05, momentum=0.9)
        s2 = grist.torch.attach(opt2, job="val-none", address=addr, sketch_dim=256,
                                policy={"select_on": "validation"})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            opt2.step()
            s2.step()
        assert any("select_on='validation'" in str(w.message) for w in caught), caught
        s2.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def check_keepalive(gristd):
    """libgrist's keepalive pings notice a daemon that stops answering (here
    SIGSTOP: the kernel still holds the TCP connection open, so without pings
    the session would wait for good) and the session reconnects once it
    answers again."""
    import signal
    import time
    from grist._native import Client, Session
    proc, addr = start_gristd(gristd, "127.0.0.1:0")
    try:
        c = Client(addr, keepalive_s=6, backoff_max_s=1.0)
        s = Session(c, "keepalive", [dict(name="g", n=100, beta=0.9, lr=0.1)], sketch_dim=64)
        assert s.wait_ready(10)
        proc.send_signal(signal.SIGSTOP)
        t0 = time.time()
        while s.stats()["connected"] and time.time() - t0 < 30:
            time.sleep(0.2)
        noticed = time.time() - t0
        assert not s.stats()["connected"], "a stopped daemon was never noticed"
        proc.send_signal(signal.SIGCONT)
        t1 = time.time()
        while s.stats()["attaches"] < 2 and time.time() - t1 < 30:
            time.sleep(0.2)
        assert s.stats()["attaches"] >= 2, s.stats()
        print(f"keepalive: a stopped daemon noticed after {noticed:.1f} s (pings every 6 s, "
              f"5 s timeout), re-attached {time.time() - t1:.1f} s after it resumed")
        s.close()
        c.close()
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def makers_lr(name):
    return {"nadam": 0.003, "radam": 0.003, "rmsprop": 0.001, "adam": 0.003}[name]


def main():
    gristd = sys.argv[1]
    torch.set_num_threads(1)
    test_no_step_lost(gristd)
    test_optimizers(gristd)
    test_validation(gristd)
    test_single(gristd)
    test_async_sketch(gristd)
    test_policy(gristd)
    test_ddp(gristd)
    check_keepalive(gristd)
    print("torch attach: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
