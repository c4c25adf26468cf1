"""One seeding helper for Python, NumPy and torch (deterministic where the platform allows)."""
from __future__ import annotations

import os
import random

import numpy as np


def set_threads(threads: int | None) -> None:
    """Fix torch's intra-op CPU thread count (None or 0: leave torch's default).

    Float reductions split across threads add up in a different order, so a CPU result
    depends on the thread count in its last bits, and training amplifies those bits: one
    versus two threads changes the validation loss of the smoke CNN at 1e-7 after the
    first epoch and its test F1 by several points after thirty. The profiles set it.
    """
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def seed_everything(seed: int, deterministic: bool = True, threads: int | None = None) -> np.random.Generator:
    """Seed every RNG the compendium touches and return a NumPy Generator on the same seed.

    ``threads``: torch intra-op CPU threads (``set_threads``); the profiles' ``torch_threads``.
    """
    set_threads(threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a pinned dependency
        return np.random.default_rng(seed)
    torch.manual_seed(seed)
    if deterministic:
        # warn_only: a few CUDA kernels have no deterministic variant; warn rather than fail.
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    return np.random.default_rng(seed)
