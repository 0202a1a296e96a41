"""PyTorch integration: two lines attach an optimizer to gristd.

    session = grist.torch.attach(optimizer, job="resnet-a", address="127.0.0.1:7788")
    ...
    optimizer.step(); session.step()

session.step() sketches every param group's gradient with libgrist's C
kernel called on the tensor memory (data_ptr, no copy; only m floats per
group are kept), submits the summary (never blocks), and applies the newest
hyperparameters: `momentum` for SGD and RMSprop, `betas[0]` for Adam, AdamW,
NAdam and RAdam, and
`lr_scale`, multiplied into the group's lr only for the duration of
optimizer.step() (the optimizer's step is wrapped), so LR schedulers see
and set the user's lr and nothing compounds.

Distributed (DDP): pass ddp_model=; a DDP communication hook sketches each
rank's local gradient bucket before the all-reduce, so the daemon receives
the per-worker gradients it needs for the noise estimate (MATH.md section 4),
then the hook runs the standard all-reduce. Rank and world size default
from torch.distributed when it is initialized. New values are applied by
every rank at the same step (rank 0 broadcasts them every sync_every steps):
DDP only averages gradients, so ranks changing momentum at different steps
would train diverging replicas.
"""
import ctypes
import os as _os
import warnings

import numpy as np
import torch as _torch

from grist import _native
from grist._native import (Client, GristError, Session, Tensor, cuda_adam_sketcher, cuda_sketcher,
                           group_seed,
                           sketch_adam_f32, sketch_f32, unsample)

_ENONFINITE = _native.ENONFINITE


_SUPPORTED = "SGD (plain or Nesterov), Adam, AdamW, NAdam, RAdam and RMSprop"
# kinds whose beta is betas[0] (the others': momentum)
_BETAS = frozenset({"adam", "nadam", "radam"})
# kinds sketched in the metric P^-1 (docs/MATH.md 2): the state key of v
_PRECOND = {"adam": "exp_avg_sq", "nadam": "exp_avg_sq", "radam": "exp_avg_sq",
            "rmsprop": "square_avg"}


def _kind(optimizer):
    name = type(optimizer).__name__.lower()
    if name in ("adam", "adamw"):
        if any(g.get("amsgrad") for g in optimizer.param_groups):
            raise TypeError("grist.torch.attach: Adam(amsgrad=True) is not supported (its "
                            "metric is the running maximum of v, which is not sketched)")
        return "adam"
    if name in ("nadam", "radam"):
        return name
    if name == "rmsprop":
        if any(g.get("centered") for g in optimizer.param_groups):
            raise TypeError("grist.torch.attach: RMSprop(centered=True) is not supported")
        return "rmsprop"
    if name == "sgd":
        return "nesterov" if any(g.get("nesterov") for g in optimizer.param_groups) else "sgd"
    raise TypeError(f"grist.torch.attach supports {_SUPPORTED}, not {type(optimizer).__name__} "
                    f"(it has no momentum or beta1 grist could tune)")


def _radam_rect(b2, k):
    """RAdam's rectification factor at step k (1 while the variance is not
    tractable: RAdam then steps without the adaptive denominator)."""
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho = rho_inf - 2.0 * k * b2 ** k / (1.0 - b2 ** k)
    if rho <= 5.0:
        return 1.0
    return ((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)) ** 0.5


class GristSession:
    """The attached optimizer; see attach()."""

    def __init__(self, optimizer, job, address, rank=None, world_size=None, sketch_dim=1024,
                 policy=None, ddp_model=None, client=None, wait_s=0.0, async_sketch=True,
                 sync_every=10, sketch_kind="block", token=None, tls_ca=None, tls_cert=None,
                 tls_key=None, tls_server_name=None, sketch_sample=None):
        self.optimizer = optimizer
        self.sync_every = max(1, int(sync_every))
        self._val = None        # (closure, every) from validate()
        self.validation_s = 0.0  # seconds spent in validation gradients
        self.validations = 0
        self._warn_val = (policy or {}).get("select_on") == "validation"
        self.kind = _kind(optimizer)
        dist = _torch.distributed
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if world_size is None:
            world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.m = sketch_dim
        groups = []
        self._where = {}  # param -> (group index, element offset)
        for gi, g in enumerate(optimizer.param_groups):
            off = 0
            for p in g["params"]:
                self._where[p] = (gi, off)
                off += p.numel()
            beta = g["betas"][0] if self.kind in _BETAS else g["momentum"]
            groups.append(dict(name=str(g.get("name", f"group{gi}")), n=off, optimizer=self.kind,
                               lr=float(g["lr"]), beta=float(beta),
                               sketch_sample=int(sketch_sample or 0)))
        self.ngroups = len(groups)
        self._own_client = client is None
        if client is None:
            # a token from the environment (a Kubernetes secret, say) when none is given
            token = token if token is not None else _os.environ.get("GRIST_TOKEN") or None
            tls_ca = tls_ca if tls_ca is not None else _os.environ.get("GRIST_TLS_CA") or None
            client = Client(address, token=token, tls_ca=tls_ca, tls_cert=tls_cert,
                            tls_key=tls_key, tls_server_name=tls_server_name)
        self.client = client
        self.session = Session(self.client, job, groups, rank=rank, world_size=world_size,
                               sketch_dim=sketch_dim, policy=policy, sketch_kind=sketch_kind)
        self.sketch_kind = sketch_kind
        self.samples = self.session.samples  # the block sketch's 1 run in N, per group
        if wait_s and not self.session.wait_ready(wait_s):
            status, msg = self.session.last_error()
            if status in (_native.STATUS_INVALID_ARGUMENT, _native.STATUS_PERMISSION_DENIED,
                          _native.STATUS_UNAUTHENTICATED):
                # the daemon refused this attach: retrying cannot help
                self.session.close()
                if self._own_client:
                    self.client.close()
                if status == _native.STATUS_INVALID_ARGUMENT:
                    raise ValueError(f"gristd refused the attach of job {job!r}: {msg}")
                raise PermissionError(f"gristd refused the token for job {job!r}: {msg}")
        self.t = 0
        self.version = 0
        self.lr_scale = [1.0] * self.ngroups
        self.history = []  # (step, [momentum per group], [lr_scale per group])
        self._applied_key = None  # (lr, momentum) per group and lr_scale last reported
        self._acc = np.zeros((self.ngroups, self.m))
        self._sq = np.zeros((self.ngroups, 1))
        self._sk = np.zeros((self.ngroups, self.m), dtype=np.float32)
        self._local = None
        self._dacc = None
        self._dev_used = False
        self._ddp = False  # set by _install_hook
        self._params = [(p, gi, off) for p, (gi, off) in self._where.items()]
        self._tdesc = (Tensor * max(1, len(self._params)))()
        # the descriptors' fixed fields, for the fast path of _begin (SGD
        # family, every gradient present, float32, contiguous, on the CPU)
        self._tfixed = (Tensor * max(1, len(self._params)))()
        for k, (p, gi, off) in enumerate(self._params):
            self._tfixed[k].n, self._tfixed[k].offset, self._tfixed[k].group = p.numel(), off, gi
        self._tfixed_ok = False  # whether _tdesc holds them (the general path overwrites)
        self._pending = None  # [(tensor, version)] of a sketch begun on libgrist's thread
        # SGD reads the gradients without changing them, so their sketch can
        # run during optimizer.step() on another core; Adam's metric reads
        # exp_avg_sq, which the step rewrites, so Adam sketches afterwards.
        self.async_sketch = bool(async_sketch) and self.kind not in _PRECOND and ddp_model is None
        self.close_linger_s = 2.0  # close() waits this long for queued summaries to be sent
        self._applied = np.zeros((self.ngroups, 4))
        self.discarded = 0  # async sketches dropped: a gradient changed in place meanwhile
        self.rejected = 0   # steps whose gradient was not finite (nothing sent)
        self._discard_run = 0
        self._orig_step = optimizer.step
        # an LR scheduler created before attach wrapped step() with its
        # counter (it still runs inside ours); one created after sees the
        # markers below, does not wrap again, and reads the counter we keep
        counted = getattr(optimizer.step, "_with_counter", False) or \
            hasattr(optimizer.step, "_wrapped_by_lr_sched")

        def step(*args, **kwargs):
            if not counted:
                optimizer._step_count = getattr(optimizer, "_step_count", 0) + 1  # torch < 2.2
            optimizer._opt_called = True  # torch >= 2.2
            return self._scaled_step(*args, **kwargs)

        step._with_counter = True
        step._wrapped_by_lr_sched = True
        self._step_wrapper = step
        optimizer.step = step
        if ddp_model is not None:
            self._install_hook(ddp_model)

    # -- lr_scale only inside optimizer.step(): schedulers never see it --
    def _scaled_step(self, *args, **kwargs):
        if self.async_sketch and self._pending is None:
            # the gradients are final here; sketch them while the step runs
            self._pending = self._begin(True)
        groups = self.optimizer.param_groups
        saved = [g["lr"] for g in groups]
        for g, s in zip(groups, self.lr_scale):
            g["lr"] = g["lr"] * s
        try:
            return self._orig_step(*args, **kwargs)
        finally:
            self._record_applied(groups)
            for g, lr in zip(groups, saved):
                g["lr"] = lr

    def _record_applied(self, groups):
        """What this step applied, per group: lr in force, beta, the lr_scale in
        it, Adam's bias correction of exp_avg; sent with the step's summary
        (the daemon's curvature rule divides gradient changes by the lr)."""
        if self.kind not in _BETAS:
            # heavy ball: lr, momentum and the scale; nothing to send when they
            # are what the last step applied (the common case: this runs right
            # after the optimizer has churned the caches, each touched object
            # costs, measured in client/README.md)
            key = tuple((g["lr"], g["momentum"]) for g in groups), tuple(self.lr_scale)
            if key == self._applied_key:
                return
            self._applied_key = key
        a = self._applied
        for gi, (g, s) in enumerate(zip(groups, self.lr_scale)):
            a[gi, 0] = float(g["lr"])
            a[gi, 2] = float(s)
            a[gi, 3] = 1.0
            if self.kind in _BETAS:
                b1 = float(g["betas"][0])
                st = self.optimizer.state.get(g["params"][0], {}) if g["params"] else {}
                k = float(st.get("step", 0))
                if self.kind == "nadam":
                    # NAdam's momentum schedule mu_k = b1 (1 - 0.96^(k psi) / 2)
                    # is the beta it applied; its bias correction 1 / (1 - prod mu)
                    mu = b1 * (1.0 - 0.5 * 0.96 ** (max(k, 1.0) * float(g["momentum_decay"])))
                    a[gi, 1] = mu
                    prod = float(st.get("mu_product", 0.0))
                    if k >= 1 and 0.0 < prod < 1.0:
                        a[gi, 3] = 1.0 / (1.0 - prod)
                else:
                    a[gi, 1] = b1
                    if k >= 1 and b1 > 0:
                        a[gi, 3] = 1.0 / (1.0 - b1 ** k)
                    if self.kind == "radam" and k >= 1:
                        a[gi, 3] *= _radam_rect(float(g["betas"][1]), k)
            else:
                a[gi, 1] = float(g["momentum"])
        try:
            self.session.set_applied(a)
        except GristError:
            pass  # a value libgrist refuses (e.g. beta >= 1) is simply not reported

    # -- sketches --
    def _v_scale(self, grp, st):
        """The factor of v in the metric's denominator sqrt(c v) + eps: Adam's
        family bias-corrects exp_avg_sq by 1 / (1 - b2^t); RMSprop does not."""
        if self.kind == "rmsprop":
            return 1.0
        t = float(st.get("step", 1))
        return 1.0 / (1.0 - grp["betas"][1] ** max(t, 1.0))

    def _seeds(self):
        js = self.session.job_seed
        return None if js == 0 else [group_seed(js, g) for g in range(self.ngroups)]

    def _sketch_param(self, seeds, p, grad, acc, sq, gi, off):
        if grad.is_cuda:
            v = None
            if self.kind in _PRECOND:  # Adam's metric needs exp_avg_sq, on the same device
                st = self.optimizer.state.get(p, {})
                v = st.get(_PRECOND[self.kind])
                ok_v = (v is not None and v.is_cuda and v.dtype == _torch.float32 and
                        v.is_contiguous() and v.device == grad.device)
                f = cuda_adam_sketcher(self.sketch_kind) if ok_v else None
            else:
                f = cuda_sketcher(self.sketch_kind)
            if f is not None and grad.dtype == _torch.float32:
                # the CUDA kernel on the tensor memory, on the current stream;
                # only m doubles per group come back (in _flush_device)
                g = grad.detach().contiguous()
                if self._dacc is None or self._dacc.device != g.device:
                    self._dacc = _torch.zeros((self.ngroups, self.m + 1), dtype=_torch.float64,
                                              device=g.device)
                row = self._dacc[gi]
                stream = _torch.cuda.current_stream(g.device).cuda_stream
                if v is not None:
                    grp = self.optimizer.param_groups[gi]
                    r = f(seeds[gi], g.data_ptr(), v.data_ptr(), g.numel(), off,
                          self._v_scale(grp, st), float(grp["eps"]), row.data_ptr(), self.m,
                          row[self.m:].data_ptr(), stream, self.samples[gi])
                else:
                    r = f(seeds[gi], g.data_ptr(), g.numel(), off, row.data_ptr(), self.m,
                          row[self.m:].data_ptr(), stream, self.samples[gi])
                if r < 0:
                    raise GristError(r, "cuda sketch")
                self._dev_used = True
                return
            # no CUDA backend, or Adam before its first step (no exp_avg_sq
            # yet: the plain gradient, as on the host): the host path
            grad = grad.detach().cpu()
        g = grad.detach()
        if g.dtype != _torch.float32 or not g.is_contiguous():
            g = g.to(_torch.float32).contiguous()
        n = g.numel()
        if self.kind in _PRECOND:
            st = self.optimizer.state.get(p, {})
            v = st.get(_PRECOND[self.kind])
            if v is not None and v.is_cuda:  # a CUDA gradient on the host path: its v too
                v = v.detach().to("cpu", _torch.float32).contiguous()
            if v is not None and v.dtype == _torch.float32 and v.is_contiguous() and not v.is_cuda:
                grp = self.optimizer.param_groups[gi]
                v_scale = self._v_scale(grp, st)
                sketch_adam_f32(seeds[gi], g.data_ptr(), v.data_ptr(), n, off, v_scale,
                                float(grp["eps"]), acc, sq, kind=self.sketch_kind,
                                sample=self.samples[gi])
                return
        sketch_f32(seeds[gi], g.data_ptr(), n, off, acc, sq, kind=self.sketch_kind,
                   sample=self.samples[gi])

    def _unsample(self, acc, sq):
        """Finish the per-tensor path's accumulators (docs/MATH.md 2.1)."""
        for gi in range(self.ngroups):
            unsample(acc[gi], sq[gi], self.samples[gi])

    def _begin(self, run_async):
        """Describe every CPU gradient of the step to libgrist and start its
        sketch; returns the [(tensor, version)] to check at the end, or None
        (gradients on a GPU, or no job seed yet)."""
        if self.kind not in _PRECOND:
            refs = self._begin_fast(run_async)
            if refs is not False:
                return refs
        self._tfixed_ok = False
        refs = []
        k = 0
        for p, gi, off in self._params:
            g = p.grad
            if g is None:
                continue
            if g.is_cuda:
                return None
            g = g.detach()  # shares storage and version counter with p.grad
            if g.dtype != _torch.float32 or not g.is_contiguous():
                g = g.to(_torch.float32).contiguous()
            d = self._tdesc[k]
            d.grad, d.n, d.offset, d.group = g.data_ptr(), g.numel(), off, gi
            d.exp_avg_sq = None
            if self.kind in _PRECOND:
                st = self.optimizer.state.get(p, {})
                v = st.get(_PRECOND[self.kind])
                if v is not None and v.dtype == _torch.float32 and v.is_contiguous():
                    grp = self.optimizer.param_groups[gi]
                    d.exp_avg_sq = v.data_ptr()
                    d.v_scale = self._v_scale(grp, st)
                    d.eps = float(grp["eps"])
                    refs.append((v, v._version))
            refs.append((g, g._version))
            k += 1
        if self.session.sketch_begin(self._tdesc, k, run_async) < 0:
            return None
        return refs

    def _begin_fast(self, run_async):
        """_begin when every parameter has a float32 contiguous CPU gradient
        (the usual SGD step): only the gradient addresses change between
        steps. False: not applicable, take the general path."""
        td = self._tdesc
        if not self._tfixed_ok:
            ctypes.memmove(td, self._tfixed, ctypes.sizeof(self._tfixed))
            self._tfixed_ok = True
        refs = []
        f32 = _torch.float32
        for k, (p, _, _) in enumerate(self._params):
            g = p.grad
            if g is None or g.is_cuda or g.dtype is not f32 or not g.is_contiguous():
                return False
            td[k].grad = g.data_ptr()
            refs.append((g, g._version))
        if self.session.sketch_begin(td, len(self._params), run_async) < 0:
            return None
        return refs

    def _end(self, refs, batch_sizes):
        fresh = all(t._version == v for t, v in refs)
        try:
            self.session.sketch_end(self.t, batch_sizes, commit=fresh)
        except GristError as e:
            if e.code != _ENONFINITE:
                raise
            self.rejected += 1
        if fresh:
            self._discard_run = 0
            return
        self.discarded += 1
        self._discard_run += 1
        if self._discard_run >= 3 and self.async_sketch:
            # e.g. zero_grad(set_to_none=False) between optimizer.step() and
            # session.step(): sketch after the step instead
            self.async_sketch = False
            warnings.warn("grist: gradients change in place after optimizer.step(); "
                          "sketching synchronously in session.step() from now on")

    def _install_hook(self, ddp_model):
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def hook(process_group, bucket):
            seeds = self._seeds()
            if seeds is not None:
                if self._local is None:
                    self._acc[:] = 0
                    self._sq[:] = 0
                    self._local = True
                for p, grad in zip(bucket.parameters(), bucket.gradients()):
                    where = self._where.get(p)
                    if where is not None:
                        gi, off = where
                        self._sketch_param(seeds, p, grad, self._acc[gi], self._sq[gi], gi, off)
            return allreduce_hook(process_group, bucket)

        ddp_model.register_comm_hook(None, hook)
        dist = _torch.distributed
        self._pg = getattr(ddp_model, "process_group", None) or dist.group.WORLD
        self._pg_rank = dist.get_rank(self._pg)
        get_global = getattr(dist, "get_global_rank", None) or dist.distributed_c10d._get_global_rank
        self._pg_src = get_global(self._pg, 0) if self._pg is not dist.group.WORLD else 0
        self._ddp = True

    def step(self, batch_size=0):
        """Call after optimizer.step(): submit this step's summary and apply
        the newest hyperparameters for the next step."""
        self.t += 1
        batch_sizes = [batch_size] * self.ngroups
        seeds = None
        if self._pending is not None:
            refs, self._pending = self._pending, None
            self._end(refs, batch_sizes)
        elif not self._ddp and (refs := self._begin(False)) is not None:
            self._end(refs, batch_sizes)
        else:
            seeds = self._seeds()  # DDP hook or GPU tensors: per-tensor path below
        if seeds is not None:
            if self._ddp:
                ready = self._local is not None
            else:
                self._acc[:] = 0
                self._sq[:] = 0
                for p, (gi, off) in self._where.items():
                    if p.grad is not None:
                        self._sketch_param(seeds, p, p.grad, self._acc[gi], self._sq[gi], gi, off)
                ready = True
            if ready and self._dev_used:
                d = self._dacc.cpu().numpy()  # m + 1 doubles per group leave the device
                self._acc += d[:, :self.m]
                self._sq[:, 0] += d[:, self.m]
                self._dacc.zero_()
                self._dev_used = False
            if ready:
                self._unsample(self._acc, self._sq)
                self._sk[:] = self._acc
                try:
                    self.session.submit(self.t, self._sk, self._sq[:, 0], batch_sizes)
                except GristError as e:
                    if e.code != _ENONFINITE:
                        raise
                    self.rejected += 1
            self._local = None
        if self._val is not None and self.t % self._val[1] == 0:
            self._validation_step()
        elif self._warn_val and self.t == 1:
            warnings.warn("grist: policy select_on='validation' but no session.validate(...) is "
                          "registered: the daemon receives no held-out sketches and selects on "
                          "the training alignment", RuntimeWarning)
            self._warn_val = False
        if self._ddp:
            version, hp = self._agreed_latest()
        else:
            version, _, hp = self.session.latest(since=self.version)
        if hp is not None and version != self.version:
            self.version = version
            for g, h in zip(self.optimizer.param_groups, hp):
                if self.kind in _BETAS:
                    g["betas"] = (h["momentum"], g["betas"][1])
                else:
                    g["momentum"] = h["momentum"]
            # lr_coupling radius pushes an absolute lr: the factor that makes
            # the scheduled lr equal to it
            self.lr_scale = [h["lr"] / g["lr"] if h.get("lr", 0.0) > 0 and g["lr"] > 0
                             else h["lr_scale"]
                             for g, h in zip(self.optimizer.param_groups, hp)]
            self.history.append((self.t, [h["momentum"] for h in hp], list(self.lr_scale)))
        return hp

    def validate(self, closure, every=10):
        """Every `every` steps, after the step's summary, compute a held-out
        gradient and send its sketch (a validation summary: the daemon's
        select_on = validation selects on it, docs/MATH.md 5.3). closure()
        runs the model on a held-out batch and returns the loss (a tensor);
        its backward pass fills .grad, which is restored afterwards, so the
        training loop sees its own gradients. Its cost (one forward and
        backward every `every` steps) is in self.validation_s."""
        if not callable(closure):
            raise TypeError("validate: closure must be callable and return the held-out loss")
        every = int(every)
        if every < 1:
            raise ValueError("validate: every must be at least 1")
        self._val = (closure, every)
        self._warn_val = False

    def _validation_step(self):
        import time
        closure, _ = self._val
        t0 = time.perf_counter()
        params = list(self._where)
        saved = [p.grad for p in params]
        for p in params:
            p.grad = None
        try:
            with _torch.enable_grad():
                loss = closure()
                loss.backward()
            seeds = self._seeds()
            if seeds is None:
                return
            acc = np.zeros_like(self._acc)
            sq = np.zeros_like(self._sq)
            for p, (gi, off) in self._where.items():
                if p.grad is not None:
                    self._sketch_param(seeds, p, p.grad, acc[gi], sq[gi], gi, off)
            if self._dev_used:
                d = self._dacc.cpu().numpy()
                acc += d[:, :self.m]
                sq[:, 0] += d[:, self.m]
                self._dacc.zero_()
                self._dev_used = False
            self._unsample(acc, sq)
            try:
                self.session.submit(self.t, acc.astype(self._sk.dtype), sq[:, 0],
                                    [0] * self.ngroups, validation=True)
                self.validations += 1
            except GristError as e:
                if e.code != _ENONFINITE:
                    raise
                self.rejected += 1
        finally:
            for p, g in zip(params, saved):
                p.grad = g
            self.validation_s += time.perf_counter() - t0

    def _agreed_latest(self):
        """DDP: every rank must change momentum at the same step, or the
        replicas' parameters drift apart for good (DDP only averages the
        gradients). Every sync_every steps rank 0 of the model's process
        group broadcasts the newest values it received (a few doubles); every
        rank applies exactly those, whatever its own stream delivered."""
        if self.t % self.sync_every:
            return self.version, None
        buf = _torch.zeros(1 + 3 * self.ngroups, dtype=_torch.float64)
        if self._pg_rank == 0:
            version, _, hp = self.session.latest()
            if hp is not None:
                buf[0] = version
                for gi, h in enumerate(hp):
                    buf[1 + 3 * gi] = h["momentum"]
                    buf[2 + 3 * gi] = h["lr_scale"]
                    buf[3 + 3 * gi] = h.get("lr", 0.0)
        _torch.distributed.broadcast(buf, src=self._pg_src, group=self._pg)
        if buf[0] == 0:
            return self.version, None
        v = buf.tolist()
        return int(v[0]), [{"momentum": v[1 + 3 * gi], "lr_scale": v[2 + 3 * gi],
                            "lr": v[3 + 3 * gi]}
                           for gi in range(self.ngroups)]

    def stats(self):
        return self.session.stats()

    def flush(self, timeout_s=5.0):
        """Wait until every summary submitted so far was handed to the daemon
        (they leave in batches, every 25 ms); False on timeout."""
        return self.session.flush(timeout_s)

    def close(self):
        if self._pending is not None:  # let libgrist's thread finish with the tensors
            self._pending = None
            self.session.sketch_end(self.t, commit=False)
        if self.optimizer.step is self._step_wrapper:
            self.optimizer.step = self._orig_step
        if self.close_linger_s > 0:
            self.session.flush(self.close_linger_s)
        self.session.close()
        if self._own_client:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def attach(optimizer, job, address, rank=None, world_size=None, sketch_dim=1024, policy=None,
           ddp_model=None, wait_s=0.0, async_sketch=True, sync_every=10, sketch_kind="block",
           token=None, tls_ca=None, tls_cert=None, tls_key=None, tls_server_name=None,
           sketch_sample=None):
    """Attach optimizer to gristd at address as a worker of job; returns a
    GristSession (call .step() after optimizer.step(); .close() or use as a
    context manager). Never raises because the daemon is absent: training
    goes on with the optimizer's own values until hyperparameters arrive.
    Raises ValueError for a policy key it does not know and, with wait_s > 0,
    when the daemon refuses the attach (its message says which field);
    PermissionError, with wait_s > 0, when it refuses the token.

    policy: dict of the proto Policy fields (grist._native.POLICY_KEYS), e.g.
    {"candidates": [0.5, 0.9, 0.99], "lr_coupling": "dc", "j_ema": 0.9};
    absent keys take the daemon's defaults (gristd --help).

    async_sketch (default; SGD without DDP): the step's sketch starts when
    optimizer.step() starts and runs on libgrist's thread beside it; it is
    collected by session.step() and discarded (counted in .discarded) if a
    gradient was changed in place meanwhile. It hides the sketch behind the
    optimizer's step when a core is spare (client/README.md has the
    measurement); async_sketch=False sketches in session.step().

    sync_every (DDP only): every sync_every steps rank 0 broadcasts the
    values it received and every rank applies them at that same step, so the
    replicas never diverge (one broadcast of 1 + 2 x groups doubles).

    sketch_kind: "block" (default: contiguous adds, about 3x cheaper per
    element) or "hashed" (docs/MATH.md 2.1); every rank of a job must use the
    same, the daemon refuses a Hello that differs.

    sketch_sample: the block sketch keeps 1 run of 64 elements in N (1, 4, 16
    or 64) of every group, the same runs at every step and on every rank,
    scaled so that inner products stay unbiased (docs/MATH.md 2.1, 2.2).
    None (default): per group, the largest N in {1, 4, 16} that still
    sketches sketch_dim runs (at the default m: N = 4 from 262,144 elements,
    16 from 1,048,576); 1 sketches every element (do so for a group whose
    gradient sits in a few rows, e.g. a sparse embedding). The resolved N is
    .samples.

    token: the job's worker token when gristd runs with --tokens (default:
    the GRIST_TOKEN environment variable); tls_ca: the PEM CA to connect
    with TLS (default: $GRIST_TLS_CA); tls_cert/tls_key: a client certificate under mTLS;
    tls_server_name: the name in gristd's certificate if not the host
    (docs/SECURITY.md)."""
    return GristSession(optimizer, job, address, rank=rank, world_size=world_size,
                        sketch_dim=sketch_dim, policy=policy, ddp_model=ddp_model, wait_s=wait_s,
                        async_sketch=async_sketch, sync_every=sync_every, sketch_kind=sketch_kind,
                        token=token, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                        tls_server_name=tls_server_name, sketch_sample=sketch_sample)
