"""ctypes binding of libgrist (client/include/grist/client.h).

One transport implementation, tested once in C: this module only converts
arguments. The library is found through $GRIST_LIB, then next to this package
in a source checkout (build/client/libgrist.so), then where meson install put
it (grist/_install.py), then the system path.
"""
import ctypes
import ctypes.util
import os

import numpy as np

_here = os.path.dirname(os.path.abspath(__file__))


def _find():
    env = os.environ.get("GRIST_LIB")
    if env:
        return env
    root = os.path.abspath(os.path.join(_here, "..", "..", ".."))
    # the build trees count only for the package in its source tree: an
    # installed one must not pick up a build named by GRIST_BUILD
    tree_pkg = os.path.join(root, "client", "python", "grist")
    in_tree = (os.path.exists(os.path.join(root, "meson.build")) and os.path.isdir(tree_pkg)
               and os.path.samefile(_here, tree_pkg))
    for build in ("build", os.environ.get("GRIST_BUILD", "build")) if in_tree else ():
        cand = os.path.join(root, build, "client", "libgrist.so")
        if os.path.exists(cand):
            return cand
    try:  # an installed package: meson install wrote the library's path
        from grist._install import LIBGRIST
        if os.path.exists(LIBGRIST):
            return LIBGRIST
    except ImportError:
        pass
    found = ctypes.util.find_library("grist")
    if found:
        return found
    raise OSError("libgrist.so not found: build the project (sh tests/run.sh) or set GRIST_LIB")


lib_path = _find()
_lib = ctypes.CDLL(lib_path)

_u32, _u64, _i32, _dbl = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int32, ctypes.c_double
_pd = ctypes.POINTER(ctypes.c_double)
_pf = ctypes.POINTER(ctypes.c_float)


class _ClientOptions(ctypes.Structure):
    _fields_ = [("backoff_initial_s", _dbl), ("backoff_max_s", _dbl),
                ("queue_capacity", _u32), ("max_message_bytes", _i32), ("keepalive_s", _dbl),
                ("token", ctypes.c_char_p), ("tls_ca_file", ctypes.c_char_p),
                ("tls_cert_file", ctypes.c_char_p), ("tls_key_file", ctypes.c_char_p),
                ("tls_server_name", ctypes.c_char_p)]


class _GroupDesc(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("num_elements", _u64), ("optimizer", ctypes.c_int),
                ("lr", _dbl), ("beta", _dbl), ("sketch_sample", _u32)]


class _AttachOptions(ctypes.Structure):
    _fields_ = [("job", ctypes.c_char_p), ("rank", _u32), ("world_size", _u32),
                ("ngroups", _u32), ("groups", ctypes.POINTER(_GroupDesc)),
                ("sketch_dim", _u32), ("mode", ctypes.c_char_p),
                ("noise_correction", ctypes.c_char_p), ("lr_coupling", ctypes.c_char_p),
                ("solve_every", _u32), ("min_steps", _u32), ("beta_min", _dbl),
                ("beta_max", _dbl), ("candidates", _pd), ("ncandidates", _u32),
                ("select_on", ctypes.c_char_p), ("hysteresis_z", _dbl), ("hysteresis_h", _u32),
                ("ema_gamma", _dbl), ("j_ema", _dbl), ("radius", _dbl),
                ("rule", ctypes.c_char_p), ("hysteresis_z_fast", _dbl),
                ("sketch_kind", ctypes.c_char_p)]

# sketch kinds (docs/MATH.md 2.1): "block" is the default of every session
SKETCH_KINDS = ("block", "hashed")

# the policy keys attach() understands (MATH.md sections 3-6; proto Policy)
POLICY_KEYS = ("mode", "noise_correction", "lr_coupling", "select_on", "candidates",
               "beta_min", "beta_max", "min_steps", "solve_every", "hysteresis_z",
               "hysteresis_h", "ema_gamma", "j_ema", "radius", "rule", "hysteresis_z_fast")


class Tensor(ctypes.Structure):
    """struct grist_tensor: one gradient tensor of a step (sketch_begin)."""
    _fields_ = [("grad", ctypes.c_void_p), ("exp_avg_sq", ctypes.c_void_p), ("n", _u64),
                ("offset", _u64), ("group", _u32), ("v_scale", _dbl), ("eps", _dbl)]


class _GroupHyperparams(ctypes.Structure):
    _fields_ = [("momentum", _dbl), ("lr_scale", _dbl), ("lr", _dbl), ("confidence", _dbl)]


class _SessionStats(ctypes.Structure):
    _fields_ = [("submitted", _u64), ("sent", _u64), ("dropped", _u64), ("attaches", _u64),
                ("failures", _u64), ("received", _u64), ("queued", _u32),
                ("connected", ctypes.c_int), ("last_status", ctypes.c_int)]


def _sig(name, res, *args):
    f = getattr(_lib, name)
    f.restype = res
    f.argtypes = list(args)
    return f


_vp = ctypes.c_void_p
_options_default = _sig("grist_client_options_default", None, ctypes.POINTER(_ClientOptions))
_options_size = _sig("grist_client_options_size", ctypes.c_size_t)
if _options_size() != ctypes.sizeof(_ClientOptions):  # a libgrist of another layout
    raise ImportError(f"libgrist's grist_client_options is {_options_size()} bytes, this binding "
                      f"expects {ctypes.sizeof(_ClientOptions)}: rebuild or point GRIST_LIB at "
                      "the matching libgrist.so")
_client_open = _sig("grist_client_open", ctypes.c_int, ctypes.c_char_p,
                    ctypes.POINTER(_ClientOptions), ctypes.POINTER(_vp))
_client_close = _sig("grist_client_close", None, _vp)
_attach = _sig("grist_session_attach", ctypes.c_int, _vp, ctypes.POINTER(_AttachOptions),
               ctypes.POINTER(_vp))
_wait_ready = _sig("grist_session_wait_ready", ctypes.c_int, _vp, _dbl)
_job_seed = _sig("grist_session_job_seed", _u32, _vp)
_session_address = _sig("grist_session_address", ctypes.c_char_p, _vp)
_shard_pick = _sig("grist_shard_pick", _u32, ctypes.c_char_p, _u32)


def shard_pick(job, n):
    """The shard (0..n-1) of job: the rendezvous hashing gristd --shard uses."""
    return _shard_pick(_b(job), n)
_group_seed = _sig("grist_sketch_group_seed", _u32, _u32, _u32)
_submit = _sig("grist_session_submit", ctypes.c_int, _vp, _u64, _pf, _pd,
               ctypes.POINTER(_u32), ctypes.c_int)
_latest = _sig("grist_session_latest", ctypes.c_int, _vp, ctypes.POINTER(_GroupHyperparams),
               _u32, ctypes.POINTER(_u64), ctypes.POINTER(_u64))
_sk_begin = _sig("grist_session_sketch_begin", ctypes.c_int, _vp, ctypes.POINTER(Tensor), _u32,
                 ctypes.c_int)
_sk_end = _sig("grist_session_sketch_end", ctypes.c_int, _vp, _u64, ctypes.POINTER(_u32),
               ctypes.c_int, ctypes.c_int)
_stats = _sig("grist_session_stats", None, _vp, ctypes.POINTER(_SessionStats))
_flush = _sig("grist_session_flush", ctypes.c_int, _vp, _dbl)
_set_applied = _sig("grist_session_set_applied", ctypes.c_int, _vp, _pd)
_last_error = _sig("grist_session_last_error", ctypes.c_int, _vp, ctypes.c_char_p, ctypes.c_size_t)
_session_close = _sig("grist_session_close", None, _vp)
_strerror = _sig("grist_strerror", ctypes.c_char_p, ctypes.c_int)
_err_name = _sig("grist_err_name", ctypes.c_char_p, ctypes.c_int)


def _grist_errors():
    """The project's error codes by name ("NONFINITE": -4001, ...), read from
    libgrist (kernels/include/grist/error.h is their one source)."""
    out, code = {}, -4001  # the codes run down from -4001 without a gap
    while (name := _err_name(code).decode()).startswith("GRIST_E"):
        out[name[len("GRIST_E"):]] = code
        code -= 1
    return out


ERRORS = _grist_errors()
ENONFINITE = ERRORS["NONFINITE"]

# gRPC status codes the bindings act on (fixed by the gRPC protocol)
STATUS_INVALID_ARGUMENT, STATUS_PERMISSION_DENIED, STATUS_UNAUTHENTICATED = 3, 7, 16
_sk_f32 = {"hashed": _sig("grist_sketch_accum_f32", ctypes.c_int, _u32, _vp, _u64, _u64, _pd,
                          _u32, _pd),
           "block": _sig("grist_sketch_block_accum_f32", ctypes.c_int, _u32, _u32, _vp, _u64, _u64,
                         _pd, _u32, _pd)}
_sk_adam = {"hashed": _sig("grist_sketch_accum_adam_f32", ctypes.c_int, _u32, _vp, _vp, _u64, _u64,
                           _dbl, _dbl, _pd, _u32, _pd),
            "block": _sig("grist_sketch_block_accum_adam_f32", ctypes.c_int, _u32, _u32, _vp, _vp,
                          _u64, _u64, _dbl, _dbl, _pd, _u32, _pd)}
_sk_kind = _sig("grist_session_sketch_kind", ctypes.c_int, _vp)
_sk_sample = _sig("grist_session_sketch_sample", ctypes.c_int, _vp, _u32)
_unsample = _sig("grist_sketch_unsample", None, _pd, _u32, _u32, _pd)
_sample_auto = _sig("grist_sketch_sample_auto", _u32, _u64, _u32)


class GristError(RuntimeError):
    def __init__(self, code, what):
        super().__init__(f"{what}: {_strerror(code).decode()} ({code})")
        self.code = code


def _check(code, what):
    if code < 0:
        raise GristError(code, what)
    return code


def _b(s):
    return None if s is None else s.encode()


def group_seed(job_seed, group_index):
    """seed_p of MATH.md section 2."""
    return _group_seed(job_seed, group_index)


def _kind_fn(table, kind):
    try:
        return table[kind]
    except KeyError:
        raise ValueError(f"sketch kind {kind!r}: one of {', '.join(SKETCH_KINDS)}") from None


def _sample_args(kind, sample):
    if kind == "block":
        return (sample,)
    if sample != 1:
        raise ValueError("sketch sampling is for the block sketch only")
    return ()


def sketch_f32(seed_p, ptr, n, offset, acc, sq, kind="block", sample=1):
    """Accumulate the sketch (kind "block" or "hashed") of n float32 at address
    ptr (group offset `offset`) into acc (float64 numpy array of m); sq is a
    1-element float64 array that receives sum x^2. Called on tensor memory: no
    copy. sample: the block sketch's 1 run in N (docs/MATH.md 2.1); a sampled
    accumulator is finished with unsample()."""
    _check(_kind_fn(_sk_f32, kind)(seed_p, *_sample_args(kind, sample), ptr, n, offset,
                                   acc.ctypes.data_as(_pd), acc.size, sq.ctypes.data_as(_pd)),
           "sketch")


def sketch_adam_f32(seed_p, g_ptr, v_ptr, n, offset, v_scale, eps, acc, sq, kind="block",
                    sample=1):
    """As sketch_f32 for Adam's metric: x = g / sqrt(sqrt(v * v_scale) + eps)."""
    _check(_kind_fn(_sk_adam, kind)(seed_p, *_sample_args(kind, sample), g_ptr, v_ptr, n, offset,
                                    v_scale, eps, acc.ctypes.data_as(_pd), acc.size,
                                    sq.ctypes.data_as(_pd)),
           "sketch")


def unsample(acc, sq, sample):
    """grist_sketch_unsample on one group's accumulator (m float64) and its
    1-element norm array: x sqrt(N) and x N, exact."""
    if sample != 1:
        _unsample(acc.ctypes.data_as(_pd), acc.size, sample, sq.ctypes.data_as(_pd))


def sample_auto(n, m):
    """grist_sketch_sample_auto: the sampling a group of n elements gets by default."""
    return _sample_auto(n, m)


class Client:
    """A channel to gristd and libgrist's background thread."""

    def __init__(self, address, queue_capacity=None, backoff_initial_s=None, backoff_max_s=None,
                 keepalive_s=None, token=None, tls_ca=None, tls_cert=None, tls_key=None,
                 tls_server_name=None):
        """None keeps libgrist's default (grist_client_options_default in
        client/include/grist/client.h). token: gristd's bearer token (--tokens); tls_ca: PEM CA file to
        connect with TLS; tls_cert/tls_key: a client certificate (mTLS);
        tls_server_name: the name in gristd's certificate when it is not
        the address's host (docs/SECURITY.md)."""
        opt = _ClientOptions()
        _options_default(ctypes.byref(opt))
        for field, v in (("queue_capacity", queue_capacity),
                         ("backoff_initial_s", backoff_initial_s),
                         ("backoff_max_s", backoff_max_s), ("keepalive_s", keepalive_s)):
            if v is not None:
                setattr(opt, field, v)
        for field, v in (("token", token), ("tls_ca_file", tls_ca), ("tls_cert_file", tls_cert),
                         ("tls_key_file", tls_key), ("tls_server_name", tls_server_name)):
            if v is not None:
                setattr(opt, field, _b(str(v)))  # libgrist copies them
        self._h = _vp()
        _check(_client_open(_b(address), ctypes.byref(opt), ctypes.byref(self._h)), "client_open")
        self.address = address
        self._sessions = []

    def close(self):
        if self._h:
            for s in self._sessions:  # libgrist frees them with the client
                s._h = None
            _client_close(self._h)
            self._h = None

    def __del__(self):
        self.close()


SGD, ADAM, SGD_NESTEROV, RMSPROP, NADAM, RADAM = 1, 2, 3, 4, 5, 6
_KINDS = {"sgd": SGD, "adam": ADAM, "nesterov": SGD_NESTEROV, "rmsprop": RMSPROP,
          "nadam": NADAM, "radam": RADAM}


class Session:
    """One worker attached to a job (libgrist session)."""

    def __init__(self, client, job, groups, rank=0, world_size=1, sketch_dim=1024, policy=None,
                 sketch_kind="block"):
        policy = dict(policy or {})
        if sketch_kind not in SKETCH_KINDS:
            raise ValueError(f"sketch_kind {sketch_kind!r}: one of {', '.join(SKETCH_KINDS)}")
        self.sketch_kind = sketch_kind
        unknown = sorted(set(policy) - set(POLICY_KEYS))
        if unknown:
            raise ValueError(f"unknown policy key(s) {unknown}; known: {', '.join(POLICY_KEYS)}")
        self.client = client
        self.ngroups = len(groups)
        self.m = sketch_dim
        descs = (_GroupDesc * self.ngroups)()
        self._names = []
        for i, g in enumerate(groups):
            name = _b(g.get("name", f"group{i}"))
            self._names.append(name)
            descs[i] = _GroupDesc(name, int(g["n"]), _KINDS.get(g.get("optimizer"), SGD),
                                  float(g.get("lr", 0.0)), float(g.get("beta", 0.0)),
                                  int(g.get("sketch_sample", 0)))
        o = _AttachOptions()
        o.job = _b(job)
        o.rank, o.world_size, o.ngroups = rank, world_size, self.ngroups
        o.groups = descs
        o.sketch_dim = sketch_dim
        o.sketch_kind = _b(sketch_kind)
        o.mode = _b(policy.get("mode"))
        o.noise_correction = _b(policy.get("noise_correction"))
        o.lr_coupling = _b(policy.get("lr_coupling"))
        o.solve_every = int(policy.get("solve_every", 0))
        o.min_steps = int(policy.get("min_steps", 0))
        o.beta_min = float(policy.get("beta_min", 0.0))
        o.beta_max = float(policy.get("beta_max", 0.0))
        o.select_on = _b(policy.get("select_on"))
        o.hysteresis_z = float(policy.get("hysteresis_z", 0.0))
        o.hysteresis_h = int(policy.get("hysteresis_h", 0))
        o.ema_gamma = float(policy.get("ema_gamma", 0.0))
        o.j_ema = float(policy.get("j_ema", 0.0))
        o.radius = float(policy.get("radius", 0.0))
        o.rule = _b(policy.get("rule"))
        o.hysteresis_z_fast = float(policy.get("hysteresis_z_fast", 0.0))
        cand = policy.get("candidates")
        if isinstance(cand, str):
            cand = cand.replace(",", " ").split()
        if cand:  # attach encodes the Hello before it returns: a local array is enough
            arr = (_dbl * len(cand))(*[float(x) for x in cand])
            o.candidates, o.ncandidates = arr, len(cand)
        self._h = _vp()
        _check(_attach(client._h, ctypes.byref(o), ctypes.byref(self._h)), "attach")
        client._sessions.append(self)
        # the block sketch's sampling per group, as libgrist resolved it (0 = auto)
        self.samples = [_sk_sample(self._h, g) for g in range(self.ngroups)]
        self._hp = (_GroupHyperparams * self.ngroups)()
        self._lv, self._ls = _u64(), _u64()
        self._lvp, self._lsp = ctypes.byref(self._lv), ctypes.byref(self._ls)
        self._applied = np.zeros(4 * self.ngroups)
        self._bs = (_u32 * self.ngroups)()

    def set_applied(self, values):
        """What the worker applied in the step of the next summary: per group
        (lr in force, beta, lr_scale included in lr, update factor)."""
        a = self._applied
        a[:] = np.asarray(values, dtype=np.float64).ravel()
        return _check(_set_applied(self._h, a.ctypes.data_as(_pd)), "set_applied")

    def wait_ready(self, timeout_s):
        return _wait_ready(self._h, timeout_s) == 0

    def last_error(self):
        """(gRPC status, the daemon's message) of the last stream that ended
        with an error; (0, "") when none. Status 3 (INVALID_ARGUMENT): the
        daemon refused the attach (e.g. a policy value out of range)."""
        buf = ctypes.create_string_buffer(256)
        st = _last_error(self._h, buf, len(buf))
        return st, buf.value.decode(errors="replace")

    @property
    def address(self):
        """The replica this session attaches to now (its job's shard, or a redirect's)."""
        return _session_address(self._h).decode()

    @property
    def job_seed(self):
        return _job_seed(self._h)

    def submit(self, step, sketches, sq_norms=None, batch_sizes=None, validation=False):
        """sketches: float32 array (ngroups, m), C-contiguous."""
        sk = np.ascontiguousarray(sketches, dtype=np.float32)
        assert sk.shape == (self.ngroups, self.m), sk.shape
        sq = None if sq_norms is None else np.ascontiguousarray(sq_norms, dtype=np.float64)
        bs = None
        if batch_sizes is not None:
            for i, b in enumerate(batch_sizes):
                self._bs[i] = int(b)
            bs = self._bs
        r = _submit(self._h, step, sk.ctypes.data_as(_pf),
                    None if sq is None else sq.ctypes.data_as(_pd), bs, int(bool(validation)))
        return _check(r, "submit")

    def sketch_begin(self, tensors, count, run_async):
        """Start the sketch of one step over tensors (a ctypes array of Tensor,
        the first count used), on libgrist's sketch thread when run_async.
        Returns 0, or -EAGAIN before Welcome (nothing started); raises on
        other errors. The tensors must stay alive and unmodified until
        sketch_end()."""
        r = _sk_begin(self._h, tensors, count, int(bool(run_async)))
        if r == -11:  # EAGAIN: no job seed yet
            return r
        return _check(r, "sketch_begin")

    def sketch_end(self, step, batch_sizes=None, validation=False, commit=True):
        """Wait for the begun sketch and submit it (commit) or discard it."""
        bs = None
        if batch_sizes is not None:
            for i, b in enumerate(batch_sizes):
                self._bs[i] = int(b)
            bs = self._bs
        return _check(_sk_end(self._h, step, bs, int(bool(validation)), int(bool(commit))),
                      "sketch_end")

    def latest(self, since=None):
        """(version, step, [dict(momentum, lr_scale, lr, confidence)]) or (0, 0, None).
        With since: (version, step, None) while the version is still `since`
        (nothing new: no dicts built, the per-step call of grist.torch)."""
        v, s = self._lv, self._ls
        r = _latest(self._h, self._hp, self.ngroups, self._lvp, self._lsp)
        if r < 0:
            return 0, 0, None
        if since is not None and v.value == since:
            return v.value, s.value, None
        return v.value, s.value, [dict(momentum=h.momentum, lr_scale=h.lr_scale, lr=h.lr,
                                       confidence=h.confidence) for h in self._hp]

    def stats(self):
        st = _SessionStats()
        _stats(self._h, ctypes.byref(st))
        return {f: getattr(st, f) for f, _ in _SessionStats._fields_}

    def flush(self, timeout_s):
        """Wait until every queued summary was sent; False on timeout."""
        return _flush(self._h, timeout_s) == 0

    def close(self):
        if self._h:
            _session_close(self._h)
            self._h = None
            if self in self.client._sessions:
                self.client._sessions.remove(self)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


_cuda = None


def cuda_sketcher(kind="block"):
    """grist_sketch_cuda_f32 (kind "hashed") or grist_sketch_cuda_block_f32 from
    libgrist-kernels-cuda.so ($GRIST_CUDA_LIB, or next to libgrist in a build
    tree), or None when the CUDA backend is not built. Call as f(seed_p, x_ptr,
    n, offset, acc_ptr, m, sq_ptr, stream, sample=1) (sample: the block
    sketch's 1 run in N; the caller unsamples the finished accumulator)."""
    global _cuda
    if _cuda is None:
        cands = [os.environ.get("GRIST_CUDA_LIB"),
                 os.path.join(os.path.dirname(lib_path), "..", "kernels", "libgrist-kernels-cuda.so"),
                 os.path.join(os.path.dirname(lib_path), "libgrist-kernels-cuda.so")]
        _cuda = False
        for c in cands:
            if c and os.path.exists(c):
                lib = ctypes.CDLL(c)
                _cuda = {}
                hashed, block = lib.grist_sketch_cuda_f32, lib.grist_sketch_cuda_block_f32
                hashed.restype = block.restype = ctypes.c_int
                hashed.argtypes = [_u32, _vp, _u64, _u64, _vp, _u32, _vp, _vp]
                block.argtypes = [_u32, _u32, _vp, _u64, _u64, _vp, _u32, _vp, _vp]
                _cuda["hashed"] = lambda seed, x, n, off, acc, m, sq, stream, sample=1: hashed(
                    seed, x, n, off, acc, m, sq, stream) if sample == 1 else -22
                _cuda["block"] = lambda seed, x, n, off, acc, m, sq, stream, sample=1: block(
                    seed, sample, x, n, off, acc, m, sq, stream)
                ah, ab = lib.grist_sketch_cuda_adam_f32, lib.grist_sketch_cuda_block_adam_f32
                ah.restype = ab.restype = ctypes.c_int
                ah.argtypes = [_u32, _vp, _vp, _u64, _u64, _dbl, _dbl, _vp, _u32, _vp, _vp]
                ab.argtypes = [_u32, _u32, _vp, _vp, _u64, _u64, _dbl, _dbl, _vp, _u32, _vp, _vp]
                _cuda["adam-hashed"] = (
                    lambda seed, g, v, n, off, vs, eps, acc, m, sq, stream, sample=1:
                    ah(seed, g, v, n, off, vs, eps, acc, m, sq, stream) if sample == 1 else -22)
                _cuda["adam-block"] = (
                    lambda seed, g, v, n, off, vs, eps, acc, m, sq, stream, sample=1:
                    ab(seed, sample, g, v, n, off, vs, eps, acc, m, sq, stream))
                break
    return _cuda[kind] if _cuda else None


def cuda_adam_sketcher(kind="block"):
    """grist_sketch_cuda_adam_f32 / grist_sketch_cuda_block_adam_f32 (Adam's
    metric on device memory), or None without the CUDA backend. Call as
    f(seed_p, g_ptr, v_ptr, n, offset, v_scale, eps, acc_ptr, m, sq_ptr,
    stream, sample=1)."""
    return cuda_sketcher("adam-" + kind)
