"""One CPU kernel set on every x86 machine, so that CPU results do not depend on which x86 CPU ran them.

PyTorch, oneDNN and MKL each pick their kernels by the instruction sets the CPU has. The committed smoke
results were made on machines with AVX-512 and later on one with AVX2 only, and there the same code, seed and
thread count trained another CNN: the floats are summed in another order, stage 1 picked 376 key frames
instead of 369, and every later number moved (docs/reexecution.md). ``pin`` caps all three at AVX2, which
every x86-64 machine since 2013 has, through their documented environment variables:

- ``ATEN_CPU_CAPABILITY=avx2``: PyTorch's own vectorised kernels;
- ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN (convolutions, some matmuls);
- ``MKL_CBWR=AVX2``: MKL's conditional numerical reproducibility (BLAS).

They are read when each library first runs a kernel, so ``import cag_utils`` sets them (``setdefault``: a
value the user exported wins) before any torch work. GPUs are not affected. ``capability`` says what torch uses.
"""
from __future__ import annotations

import os

PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}


def pin() -> dict[str, str]:
    """Set each of ``PINS`` unless already set; return the values in force."""
    for key, value in PINS.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in PINS}


def capability() -> str:
    """The CPU kernel set torch dispatches to ("AVX2", "DEFAULT", ...)."""
    import torch

    return torch.backends.cpu.get_cpu_capability()
