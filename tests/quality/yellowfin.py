"""YellowFin (Zhang & Mitliagkas, "YellowFin and the Art of Momentum Tuning",
MLSys 2019), reimplemented from the paper's algorithm as a baseline for the
quality suite: a wrapper around torch.optim.SGD that sets the momentum mu and
the learning rate alpha of every param group before each step.

    opt = YellowFin(groups, lr=0.05, momentum=0.9)      # initial values
    loss.backward(); opt.step(); opt.zero_grad()

Each step t, from the current minibatch gradient g_t (all parameters
together; the paper tunes one mu and one alpha for the whole model, and so
does this class: every param group gets the same values):

Measurements (the paper's Algorithms 2-4; every running average is an EMA
with the paper's beta = 0.999, zero-debiased by 1 - beta^t as in Adam, so the
first steps are not biased towards 0):

  CurvatureRange (Algorithm 2). h_t = ||g_t||^2: g g^T has the eigenvalue
      ||g||^2 along g, the paper's proxy for the curvature in the gradient's
      direction. Over a sliding window of the last w = 20 values:
          h_max <- EMA(max_{t-w < i <= t} h_i),   h_min <- EMA(min_{t-w < i <= t} h_i)
  Variance (Algorithm 3). The gradient variance
          C = 1^T (EMA(g (.) g) - EMA(g)^2) = EMA(||g||^2) - ||EMA(g)||^2
      (summed over all coordinates; one running mean tensor per parameter).
  Distance (Algorithm 4). The distance to the optimum, from ||x - x*|| <=
      ||g|| / h on a quadratic:
          D <- EMA(EMA(||g||) / EMA(h))

Tuning rule: SingleStep (the paper's Eq. "SingleStep", minimising the
expected squared distance to the optimum after one step of the noisy
quadratic model):
          (mu_t, alpha_t) = argmin_mu  mu D^2 + alpha^2 C
          s.t.  sqrt(mu) >= (sqrt(h_max/h_min) - 1) / (sqrt(h_max/h_min) + 1)
                alpha = (1 - sqrt(mu))^2 / h_min
  The constraint keeps every curvature in [h_min, h_max] in the robust
  region, where the momentum operator's spectral radius is sqrt(mu).
  Closed form: with x = sqrt(mu) the objective is x^2 D^2 + (1-x)^4 C/h_min^2;
  its stationary point has x D^2 h_min^2 / (2C) = (1-x)^3, i.e. with
  y = 1 - x and p = D^2 h_min^2 / (2C) the cubic y^3 + p y - p = 0. Its
  discriminant is negative for p > 0, so it has one real root (in (0, 1)),
  given by Cardano / Vieta: u = cbrt(p/2 + sqrt(p^2/4 + p^3/27)), y = u - p/(3u)
  (two Newton steps polish it in float64). Then mu_t = max(x^2, the
  constraint's bound) and alpha_t = (1 - sqrt(mu_t))^2 / h_min.

Smoothing (the paper's, beta 0.999): the values in force follow the solution
slowly,  mu <- beta mu + (1-beta) mu_t,  alpha <- beta alpha + (1-beta) alpha_t,
starting from the constructor's lr and momentum (the paper starts from
alpha 1.0, mu 0.0 for runs of many thousand steps; the quality suite's runs
are 400-500 steps, so there it starts from the cell's lr and start beta).

Clipping: YellowFin's two safeguards, against the first, noisy estimates
and against exploding gradients (the exact rules and constants here are
this file's choices, written from their description):
  - lr clipping (slow start): during the first 10 w steps alpha_t is scaled
    by t / (10 w), so that a window that has seen few gradients (h_min
    overestimated from few samples, C close to 0) cannot set a huge lr;
  - adaptive gradient clipping: a gradient with ||g_t|| > sqrt(h_max) (the
    smoothed top of the curvature range) is scaled down to norm sqrt(h_max)
    for the step; the measurements above use the unclipped gradient.

Torch's SGD momentum form (buf = mu buf + g; x -= alpha buf) equals the
paper's x_{t+1} = x_t - alpha g_t + mu (x_t - x_{t-1}) at a constant alpha;
alpha moves by at most 0.1 % a step here, so the two agree closely.
nesterov=True runs torch's Nesterov variant with the same rule (an extension:
the paper's analysis is for heavy-ball momentum).

Nothing here is copied from an implementation: it follows the paper's
algorithm boxes and equations as summarised above.
"""
import math
from collections import deque

import torch


class YellowFin:
    """Momentum SGD whose mu and lr are tuned by YellowFin; see the module
    docstring. step() reads every parameter's .grad, updates the
    measurements, sets lr and momentum of all param groups and steps.
    Attributes: lr, momentum (the values in force), trace (a list of
    (step, mu, lr) every trace_every steps)."""

    def __init__(self, params, lr=1.0, momentum=0.0, nesterov=False, weight_decay=0.0,
                 beta=0.999, window=20, slow_start=True, clip=True, trace_every=25):
        # torch refuses nesterov at momentum 0, which is plain SGD: build
        # with a placeholder and set 0 (its step checks momentum != 0)
        self.sgd = torch.optim.SGD(params, lr=lr, momentum=momentum if momentum > 0 or not nesterov
                                   else 0.5, nesterov=nesterov, weight_decay=weight_decay)
        self.param_groups = self.sgd.param_groups
        self.state = self.sgd.state
        self.beta = float(beta)
        self.w = int(window)
        self.slow_start = slow_start
        self.clip = clip
        self.trace_every = trace_every
        self.lr = float(lr)
        self.momentum = float(momentum)
        self._set(self.lr, self.momentum)
        self.t = 0
        self._win = deque(maxlen=self.w)
        self._ema = {"h_max": 0.0, "h_min": 0.0, "g2": 0.0, "gnorm": 0.0, "h": 0.0, "D": 0.0}
        self._gbar = {}  # parameter -> EMA of its gradient (Algorithm 3)
        self.h_max = self.h_min = self.C = self.D = None  # the latest debiased estimates
        self.mu_t = self.lr_t = None  # the latest SingleStep solution
        self.clipped = 0  # steps whose gradient was clipped
        self.trace = []

    def _set(self, lr, mu):
        for g in self.param_groups:
            g["lr"] = lr
            g["momentum"] = mu

    def zero_grad(self, set_to_none=False):
        self.sgd.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return self.sgd.state_dict()

    def _params(self):
        return [p for g in self.param_groups for p in g["params"] if p.grad is not None]

    def _ema_update(self, key, value):
        self._ema[key] = self.beta * self._ema[key] + (1.0 - self.beta) * value
        return self._ema[key] / (1.0 - self.beta ** self.t)

    @staticmethod
    def single_step(C, D, h_min, h_max):
        """The SingleStep problem's solution (mu, alpha) in closed form."""
        p = (D * h_min) ** 2 / (2.0 * C)
        if not math.isfinite(p):
            y = 1.0  # no noise: the distance term alone, x = sqrt(mu) = 0
        else:
            u = (p / 2.0 + math.sqrt(p * p / 4.0 + p ** 3 / 27.0)) ** (1.0 / 3.0)
            y = u - p / (3.0 * u) if u > 0 else 0.0
            for _ in range(2):  # Newton on y^3 + p y - p (increasing in y)
                y -= (y ** 3 + p * y - p) / (3.0 * y * y + p)
            y = min(max(y, 0.0), 1.0)
        x = 1.0 - y
        r = math.sqrt(h_max / h_min)
        bound = (r - 1.0) / (r + 1.0)
        sqrt_mu = max(x, bound)
        mu = sqrt_mu * sqrt_mu
        return mu, (1.0 - sqrt_mu) ** 2 / h_min

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        params = self._params()
        if not params:
            return loss
        h = float(sum(torch.sum(p.grad.double() ** 2) for p in params))
        if not math.isfinite(h) or h <= 0.0:
            return loss  # nothing to learn from (and nothing to step on)
        self.t += 1
        # Algorithm 2: curvature range over the sliding window
        self._win.append(h)
        h_max = self._ema_update("h_max", max(self._win))
        h_min = self._ema_update("h_min", min(self._win))
        # Algorithm 3: gradient variance C = EMA(||g||^2) - ||EMA(g)||^2
        g2 = self._ema_update("g2", h)
        debias = 1.0 - self.beta ** self.t
        mean_sq = 0.0
        for p in params:
            gb = self._gbar.get(p)
            if gb is None:
                gb = self._gbar[p] = torch.zeros_like(p.grad, dtype=torch.float64)
            gb.mul_(self.beta).add_(p.grad.double(), alpha=1.0 - self.beta)
            mean_sq += float(torch.sum(gb * gb)) / (debias * debias)
        C = max(g2 - mean_sq, 0.0)
        # Algorithm 4: distance to the optimum (the ratio of two EMAs with the
        # same debias factor needs none; the outer EMA is debiased)
        gnorm = self._ema_update("gnorm", math.sqrt(h))
        hbar = self._ema_update("h", h)
        D = self._ema_update("D", gnorm / hbar)
        self.h_max, self.h_min, self.C, self.D = h_max, h_min, C, D
        if C > 0.0 and h_min > 0.0:
            mu_t, lr_t = self.single_step(C, D, h_min, h_max)
            if self.slow_start and self.t < 10 * self.w:
                lr_t *= self.t / (10.0 * self.w)
            self.mu_t, self.lr_t = mu_t, lr_t
            self.momentum = self.beta * self.momentum + (1.0 - self.beta) * mu_t
            self.lr = self.beta * self.lr + (1.0 - self.beta) * lr_t
            self._set(self.lr, self.momentum)
        if self.clip and self.t > 1 and h > h_max:
            scale = math.sqrt(h_max / h)
            for p in params:
                p.grad.mul_(scale)
            self.clipped += 1
        if self.trace_every and self.t % self.trace_every == 0:
            self.trace.append((self.t, self.momentum, self.lr))
        self.sgd.step()
        return loss
