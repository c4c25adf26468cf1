"""One CPU kernel set on every x86 machine (cag_utils.cpukernels): ``import cag_utils`` caps PyTorch, oneDNN and
MKL at AVX2 before any torch work, and a value the user exported wins. Each check runs in a fresh process, since
the libraries read the variables once."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from cag_utils import cpukernels

SHOW = "import cag_utils, os, torch; print(torch.backends.cpu.get_cpu_capability(), os.environ['MKL_CBWR'])"


def _fresh(env: dict[str, str]) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in cpukernels.PINS}
    return subprocess.run([sys.executable, "-c", SHOW], env={**clean, **env}, capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the pins are x86 instruction sets")
def test_import_caps_the_kernels_at_avx2_in_a_fresh_process():
    capability, cbwr = _fresh({})
    assert capability == "AVX2" and cbwr == "AVX2"   # never AVX512* (the machines that made earlier results)


def test_a_value_the_user_exported_wins():
    capability, cbwr = _fresh({"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"})
    assert capability == "DEFAULT" and cbwr == "COMPATIBLE"   # and the variable does reach torch's dispatch


def test_pin_sets_only_what_is_unset(monkeypatch):
    for key in cpukernels.PINS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    assert cpukernels.pin() == {**cpukernels.PINS, "ONEDNN_MAX_CPU_ISA": "SSE41"}
