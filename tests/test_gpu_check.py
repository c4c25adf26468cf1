"""benchmarks/gpu_check.py on a machine without a GPU: the no-CUDA exit, the import hygiene, and the
VLM LoRA step logic of all three families with tiny models on the CPU (the same code as the GPU run)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

# DICOM, notebook, metric and data-stack modules the GPU check must never import. ``datasets`` too: the GPU
# machine's image has none, and where it is installed transformers' Trainer imports it (and it pandas).
BLOCKED = ("pydicom", "papermill", "nbformat", "sacrebleu", "pandas", "datasets", "cag_utils.data.dicom",
           "cag_utils.evaluation.metrics", "cag_utils.intervals", "cag_utils.synth")
KINDS = ("paligemma", "gemma3", "conceptclip_gemma3")


def _run(code: str, tmp_path: Path, env_extra: dict | None = None, timeout: int = 240):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    env.pop("OUT", None)
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_without_cuda_says_so_writes_nothing_and_exits_0(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--out", str(out)], cwd=tmp_path,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no CUDA device" in proc.stdout
    assert not out.exists() and not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """One CPU run of the three tiny VLMs with the blocked modules unimportable (the CNN parts may use pandas:
    ``cag_utils.cnn`` imports it, and the GPU machine has it)."""
    tmp = tmp_path_factory.mktemp("gpu_check")
    out = tmp / "check.json"
    code = (f"import sys\nfor m in {BLOCKED!r}: sys.modules[m] = None\n"
            f"sys.path.insert(0, {str(BENCH)!r})\nimport gpu_check\n"
            f"gpu_check.main(['--device', 'cpu', '--parts', 'vlm', '--attn', 'eager', "
            f"'--out', {str(out)!r}])\n"
            f"print('LOADED', sorted(m for m in {BLOCKED!r} if sys.modules.get(m) is not None))\n")
    proc = _run(code, tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout
    return json.loads(out.read_text())


def _pos(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.parametrize("kind", KINDS)
def test_vlm_lora_step_on_cpu(cpu_run, kind):
    r = cpu_run["parts"][f"vlm:{kind}"]
    assert "error" not in r, r.get("traceback")
    assert r["size"] == "tiny" and r["timed_steps"] == 2 and r["optimizer_steps"] == 3
    s = r["step_seconds"]
    assert _pos(s["median"]) and s["min"] <= s["median"] <= s["max"]
    assert r["tokens_per_s"] == pytest.approx(r["batch_size"] * r["seq_len"] / s["median"])
    assert r["images_per_s"] == pytest.approx(r["batch_size"] / s["median"])
    p = r["parameters"]   # only the LoRA adapter and the projector (modules_to_save) train
    assert p["trainable_other"] == 0 and p["trainable_lora"] > 0 and p["trainable_projector"] > 0
    assert p["trainable"] == p["trainable_lora"] + p["trainable_projector"] < p["total_base"]
    f = r["flops"]
    assert _pos(f["per_example_measured"]) and f["per_step"] == f["per_example_measured"] * r["batch_size"]
    # eager attention: FlopCounterMode sees every matrix product, so it matches the written-out formula
    assert f["measured_over_analytic"] == pytest.approx(1.0, abs=0.01)
    terms = f["analytic_terms_per_example"]
    assert terms["lm_linear_fwd_bwd"] == 4 * terms["params"]["lm_linear_incl_head"] * r["seq_len"]
    assert r["mfu"] is None and r["peak_memory_gib"] is None   # no GPU peak on a CPU
    assert all(math.isfinite(g) for g in r["grad_norms"]) and math.isfinite(r["train_loss"])
    g = r["generation"]
    assert 0 < g["new_tokens"] <= g["batch_size"] * g["max_new_tokens"] and _pos(g["seconds"])


def test_cnn_step_and_run_record(cpu_run):
    import torch
    from gpu_check import cnn_training

    c = cnn_training("convnext_atto", 32, 2, 1, torch.device("cpu"), False, False, 100, 2, None, tiny=True)
    assert c["channels_last"] and _pos(c["frames_per_s"]) and _pos(c["flops_per_step"]) and c["mfu"] is None
    assert c["hours_for_epochs"] == pytest.approx(100 / c["frames_per_s"] * 2 / 3600)
    assert c["achieved_tflops"] == pytest.approx(c["flops_per_step"] / c["seconds_per_step"] / 1e12)
    assert "not in PEAK_TFLOPS_BF16" in cpu_run["peak_source"] and cpu_run["peak_tflops_bf16_dense"] is None
    assert cpu_run["versions"]["torch"] and cpu_run["versions"]["transformers"] and cpu_run["versions"]["peft"]
    assert cpu_run["skipped_for_budget"] == [] and _pos(cpu_run["total_seconds"])


def test_paper_estimate_reads_the_check_it_makes(cpu_run, tmp_path):
    """The estimate table's measured side reads exactly what make gpu-check writes."""
    sys.path.insert(0, str(BENCH))
    import paper_estimate

    path = tmp_path / "gpu_check.json"
    path.write_text(json.dumps(cpu_run))
    got = paper_estimate.measured(path)
    assert set(got["parts"]) == {k for k, v in cpu_run["parts"].items() if "skipped" not in v and "error" not in v}
    for kind in KINDS:
        part = got["parts"][f"vlm:{kind}"]
        assert part["step_s"] == cpu_run["parts"][f"vlm:{kind}"]["step_seconds"]["median"] > 0


def test_budget_guard_skips_loudly(tmp_path, capsys):
    import gpu_check

    out = gpu_check.main(["--device", "cpu", "--budget-s", "0", "--out", str(tmp_path / "c.json")])
    assert out["skipped_for_budget"] == ["vlm:paligemma", "vlm:gemma3", "vlm:conceptclip_gemma3", "cnn_training",
                                         "cnn_inference", "cnn_library_epoch"]
    assert all("budget" in p["skipped"] for p in out["parts"].values())
    assert "BUDGET" in capsys.readouterr().out
    assert json.loads((tmp_path / "c.json").read_text())["skipped_for_budget"] == out["skipped_for_budget"]


def test_peak_table():
    from gpu_check import peak_tflops

    assert peak_tflops("NVIDIA H100 80GB HBM3") == peak_tflops("NVIDIA H200") == 989.5
    assert peak_tflops("NVIDIA H100 PCIe") == 756.5 and peak_tflops("NVIDIA H200 NVL") == 835.5
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and peak_tflops("NVIDIA L40S") == 366.5
    assert peak_tflops("Tesla T4") is None


@pytest.mark.parametrize("kind,billions", [("paligemma", 3.03), ("gemma3", 4.30), ("conceptclip_gemma3", 4.30)])
def test_full_size_configs_have_the_published_sizes(kind, billions):
    """Built on the meta device (no memory): the published configuration values give the published sizes."""
    import torch
    import gpu_vlm

    model, spec = gpu_vlm.build(kind, device="meta", dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    assert n / 1e9 == pytest.approx(billions, abs=0.02)
    assert spec.image_tokens == (1024 if kind == "paligemma" else 256)
    ex = gpu_vlm.synthetic_example(spec, 2048, torch.Generator().manual_seed(0))
    assert len(ex["input_ids"]) == 2048 and int((ex["input_ids"] == spec.ids["image"]).sum()) == spec.image_tokens
    assert int((ex["labels"] != -100).sum()) > 0
