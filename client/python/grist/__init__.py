"""grist: attach a training job to gristd, the gradient-statistics sidecar.

The transport is libgrist (C) through ctypes (grist._native); PyTorch users
call grist.torch.attach(optimizer, job=..., address=...) and session.step()
after optimizer.step(). Runs under /usr/bin/python3 (Debian's packages).
"""
from grist._native import (Client, GristError, Session, group_seed, lib_path, sample_auto,
                           sketch_adam_f32, sketch_f32, unsample)

__all__ = ["Client", "Session", "GristError", "group_seed", "sketch_f32", "sketch_adam_f32",
           "unsample", "sample_auto", "lib_path"]
__version__ = "0.1.0"
