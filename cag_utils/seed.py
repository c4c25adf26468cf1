"""One seeding helper for Python, NumPy and torch (deterministic where the platform allows)."""
from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int, deterministic: bool = True) -> np.random.Generator:
    """Seed every RNG the compendium touches and return a NumPy Generator on the same seed."""
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
