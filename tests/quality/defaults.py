"""The quality runs' per-task settings, shared by momentum.py (which runs
them), suite.py / suite_verdict.py (the wide suite) and verdict.py (which
finds the default-lr sweeps among the tables)."""

TASKS = ("mlp", "cnn", "char", "tfm", "reg")
OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")

# learning rate of each (task, optimizer) when --lr is not given; nesterov
# uses sgd's and adamw adam's (filled in below). tfm and reg: chosen by a
# short sanity check at beta 0.9 (see suite.py's docstring).
DEFAULT_LR = {("mlp", "sgd"): 0.05, ("cnn", "sgd"): 0.05, ("char", "sgd"): 0.5,
              ("mlp", "adam"): 0.002, ("cnn", "adam"): 0.002, ("char", "adam"): 0.005,
              ("tfm", "sgd"): 0.3, ("tfm", "adam"): 0.003,
              ("reg", "sgd"): 0.01, ("reg", "adam"): 0.003}
for (_t, _o), _lr in list(DEFAULT_LR.items()):
    DEFAULT_LR[(_t, {"sgd": "nesterov", "adam": "adamw"}[_o])] = _lr

# moving-average training loss whose first crossing is "steps to target"
TARGET_LOSS = {"mlp": 0.15, "cnn": 0.1, "char": 2.2, "tfm": 2.2, "reg": 0.4}

# tasks whose metric is better when lower (cross-entropy, MSE); the others
# report test accuracy
LOWER_IS_BETTER = frozenset({"char", "tfm", "reg"})

# the fixed-beta sweeps (momentum for the SGD family, beta1 for the Adam one)
FIXED_BETAS = {"sgd": (0.0, 0.5, 0.8, 0.9, 0.95, 0.99), "adam": (0.5, 0.8, 0.9, 0.95, 0.99)}
# the betas the wide suite starts grist (and YellowFin) from
START_BETAS = {"sgd": (0.0, 0.9, 0.99), "adam": (0.5, 0.9, 0.99)}
# the wide suite's multipliers of the default lr
LR_MULTS = (0.3, 1.0, 3.0)


def family(optimizer):
    """'sgd' for SGD and Nesterov, 'adam' for Adam and AdamW."""
    return "sgd" if optimizer in ("sgd", "nesterov") else "adam"


def scaled_lr(base, mult):
    """base * mult, rounded to 6 significant digits (0.05 x 3 is 0.15, not
    0.15000000000000002) so that tables and result keys read cleanly."""
    return float(f"{base * mult:.6g}")
