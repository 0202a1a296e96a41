"""The quality runs' per-task settings, shared by momentum.py (which runs
them) and verdict.py (which finds the default-lr sweeps among the tables)."""

# learning rate of each (task, optimizer) when --lr is not given
DEFAULT_LR = {("mlp", "sgd"): 0.05, ("cnn", "sgd"): 0.05, ("char", "sgd"): 0.5,
              ("mlp", "adam"): 0.002, ("cnn", "adam"): 0.002, ("char", "adam"): 0.005}

# moving-average training loss whose first crossing is "steps to target"
TARGET_LOSS = {"mlp": 0.15, "cnn": 0.1, "char": 2.2}
