"""The paper profile end to end at toy size (issue 26, part 2): `python -m cag_utils.run.pipeline --profile paper`
runs all six notebooks on the CPU, shrunk by `-p` overrides only, against tiny checkpoints in the published
formats written here with `save_pretrained`, into a temporary output root.

What the paper profile does and smoke does not, each asserted from what the run wrote (results JSON with the
effective config, per-item files, executed notebooks, files on disk), never from the absence of an error:
- frames stored as 8-bit JPEG 2000 (every DICOM file of the cohort);
- TrivialAugmentWide in the CNN's recipe, the synthetic pretraining and the second start of notebook 02
  (`cnn_compare_start`);
- the real-checkpoint loaders (`build.load_vlm` through `AutoModelForImageTextToText`; no stand-in), with the
  parameter counts of the checkpoints written here;
- the ConceptCLIP join (`PooledPatchEncoder`): ConceptCLIP-Gemma3 counts the SigLIP-format encoder written in
  the ConceptCLIP position instead of Gemma3's own vision tower;
- VLScore from the embedder of `eval_embedder_path`.
Every setting whose paper value differs from smoke's is either run at its paper value (checked in the results'
config) or overridden here for size, with the reason (`SHRUNK`). Nothing is downloaded; nothing is written into
the repository.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cag_utils.run.config import REPO_ROOT, load_profile

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TOKENIZER_REPORTS = 40   # generator exams whose texts train the toy tokenizer
VOCAB = 400
VISION = {"hidden": 32, "heads": 2, "layers": 1, "image_size": 32, "patch_size": 8, "caption_length": 64}
# In the ConceptCLIP position: another SigLIP-format image-text model, deeper and at another resolution than
# Gemma3's own vision tower (the join resizes the pixels and pools 6 x 6 patches to Gemma3's 4 x 4 grid).
CONCEPTCLIP = {**VISION, "layers": 2, "image_size": 48}
EMBEDDER = {**VISION, "caption_length": 48}
LM = {"hidden": 32, "layers": 1, "heads": 2, "max_length": 2048}
GEMMA3_IMAGE_TOKENS = 4

# Settings whose paper value differs from smoke's and that this run overrides, with the reason. Every other
# such setting runs at its paper value (asserted below from the results' config).
SHRUNK = {
    "device": "CI has no GPU: the preflight's explicit flag allows the CPU",
    "num_workers": "8 generation processes on 2 cores: only overhead at toy size",
    "n_annotation_exams": "toy cohort",
    "n_independent_exams": "toy cohort",
    "image_size": "toy frames (still 8-bit JPEG 2000); 512 px is the GPU run's",
    "realism_render_exams": "renders at 512 px cost seconds each",
    "cnn_model": "convnext_atto: the same ConvNeXt code path, a fraction of convnext_base's cost",
    "cnn_input_size": "toy frames",
    "cnn_epochs": "a few epochs",
    "cnn_pretrain_exams": "toy pretraining cohort",
    "cnn_pretrain_epochs": "a few epochs",
    "cnn_num_workers": "8 DataLoader processes on 2 cores: only overhead at toy size",
    "vlm_max_new_tokens": "a random toy LM never stops: 512 greedy tokens x 4 models x 3 variants is minutes",
    "vlm_control_max_steps": "a few LoRA steps",
    "vlm_paligemma_path": "the toy checkpoints written by this test",
    "vlm_gemma3_path": "the toy checkpoints written by this test",
    "vlm_conceptclip_path": "the toy checkpoints written by this test",
    "eval_embedder_path": "the toy checkpoints written by this test",
}
# Overrides of settings that smoke and paper share (not paper-specific), for size or for the toy model.
SIZE_ONLY = {
    "realism_exams": 2,
    "realism_size": 128,
    "extract_threshold": 0.0,      # an untrained toy CNN's P(better) is below 0.5: keep each run's best candidate
    "extract_figure_exams": 2,
}


# ------------------------------------------------------------------ toy checkpoints in the published formats
def toy_tokenizer():
    """The stand-ins' BPE tokenizer (both families' special tokens), trained on a few generator reports."""
    from cag_utils.vlm import tokenizer

    return tokenizer.train_tokenizer(tokenizer.plain(tokenizer.corpus_texts(tokenizer.draw_reports(TOKENIZER_REPORTS, 7))),
                                     VOCAB)


def write_siglip(folder: Path, tok, p: dict) -> Path:
    """A SigLIP-format image-text checkpoint (SiglipModel + SiglipProcessor), as ConceptCLIP and the embedder ship."""
    import torch
    from transformers import SiglipModel, SiglipProcessor

    from cag_utils.vlm import standins

    torch.manual_seed(1)
    SiglipModel(standins.siglip_config(len(tok), p)).save_pretrained(folder)
    SiglipProcessor(image_processor=standins.image_processor(p), tokenizer=tok).save_pretrained(folder)
    return folder


def write_vlm(folder: Path, arch: str, tok) -> Path:
    """A PaliGemma2-like (Gemma2 LM) or Gemma3-like image-text checkpoint with its processor, written with
    save_pretrained as the published folders are (config.json, model.safetensors, tokenizer, processor)."""
    import torch
    from transformers import AutoModelForImageTextToText, Gemma2Config, SiglipVisionConfig

    from cag_utils.vlm import build, standins, tokenizer

    ftok = tokenizer.family_tokenizer(tok, arch)
    image_proc = standins.image_processor(VISION)
    tokens = image_proc.image_seq_length if arch == "paligemma" else GEMMA3_IMAGE_TOKENS
    processor = build.make_processor(arch, ftok, image_proc, tokens)   # PaliGemma's adds its <loc>/<seg> tokens
    vocab = len(processor.tokenizer)
    if arch == "paligemma":   # PaliGemma2: a Gemma2 language model
        text = Gemma2Config(vocab_size=vocab, hidden_size=LM["hidden"], intermediate_size=2 * LM["hidden"],
                            num_hidden_layers=LM["layers"], num_attention_heads=LM["heads"], num_key_value_heads=1,
                            head_dim=LM["hidden"] // LM["heads"], max_position_embeddings=LM["max_length"],
                            pad_token_id=0, eos_token_id=1, bos_token_id=2)
    else:
        text = standins.lm_config(vocab, LM)
    vision = SiglipVisionConfig(**{k: v for k, v in standins.siglip_config(vocab, VISION).vision_config.to_dict().items()
                                   if k not in ("model_type", "transformers_version")})
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(build.vlm_config(arch, text, vision, processor.tokenizer, tokens))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_checkpoints(root: Path) -> dict[str, Path]:
    tok = toy_tokenizer()
    return {"vlm_paligemma_path": write_vlm(root / "paligemma2-toy", "paligemma", tok),
            "vlm_gemma3_path": write_vlm(root / "gemma3-toy", "gemma3", tok),
            "vlm_conceptclip_path": write_siglip(root / "conceptclip-toy", tok, CONCEPTCLIP),
            "eval_embedder_path": write_siglip(root / "embedder-toy", tok, EMBEDDER)}


# ------------------------------------------------------------------ the run
OVERRIDES = {
    "device": "cpu", "num_workers": 2,
    "n_annotation_exams": 10, "n_independent_exams": 4, "image_size": 64, "realism_render_exams": 1,
    "cnn_model": "convnext_atto", "cnn_input_size": 64, "cnn_epochs": 2, "cnn_pretrain_exams": 6,
    "cnn_pretrain_epochs": 1, "cnn_num_workers": 2,
    "vlm_max_new_tokens": 12, "vlm_control_max_steps": 2,
    **SIZE_ONLY,
}


def run_paper_profile(out: Path, checkpoints: dict[str, Path], extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`python -m cag_utils.run.pipeline --profile paper` with the toy overrides, writing under `out` only."""
    args = [f"{k}={json.dumps(v)}" for k, v in {**OVERRIDES, **{k: str(p) for k, p in checkpoints.items()}}.items()]
    env = {**os.environ, "CAG_OUTPUT_ROOT": str(out), "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "cag_utils.run.pipeline", "--profile", "paper", "--no-wait", *extra,
           *[x for a in args for x in ("-p", a)]]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)


# ------------------------------------------------------------------ reading what the run wrote
STEPS = ("01_data", "02_cnn", "03_extraction", "04_corpus", "05_finetune", "06_evaluation")
CHECKPOINT_KEYS = ("vlm_paligemma_path", "vlm_gemma3_path", "vlm_conceptclip_path", "eval_embedder_path")
# Where a repository run would write: nothing may appear there (ignored files included).
REPO_OUTPUTS = ("results", "figures", "notebooks", "data", "runs", "models", "paper")


def repo_outputs_status() -> set[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored", "--", *REPO_OUTPUTS],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def n_parameters(folder: Path, prefix: str = "") -> int:
    """Parameters stored in a checkpoint's model.safetensors (those whose name starts with `prefix`)."""
    import math

    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith(prefix))


def paper_only_values() -> dict[str, object]:
    """Every setting whose paper value differs from smoke's, with its paper value."""
    paper, smoke = load_profile("paper"), load_profile("smoke")
    assert set(paper) == set(smoke) and all(set(paper[s]) == set(smoke[s]) for s in paper), "profiles share keys"
    return {k: v for s in paper for k, v in paper[s].items() if smoke[s][k] != v}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The toy checkpoints, the pipeline run and what it wrote."""
    root = tmp_path_factory.mktemp("paper-toy")
    before = repo_outputs_status()
    t0 = time.perf_counter()
    checkpoints = write_checkpoints(root / "checkpoints")
    t1 = time.perf_counter()
    proc = run_paper_profile(root / "out", checkpoints)
    t2 = time.perf_counter()
    print(f"toy checkpoints {t1 - t0:.0f} s, pipeline {t2 - t1:.0f} s")
    assert proc.returncode == 0, f"the paper profile failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    out = root / "out"
    results = {name: json.loads((out / "results" / "paper" / f"{name}.json").read_text(encoding="utf-8"))
               for name in STEPS}
    yield {"out": out, "work": out / "data" / "work" / "paper", "checkpoints": checkpoints, "stdout": proc.stdout,
           "results": results, "repo_before": before}
    shutil.rmtree(root, ignore_errors=True)   # about 200 MB of checkpoints


# ------------------------------------------------------------------ the tests
def test_every_step_ran_under_the_paper_profile_after_an_ok_preflight(run):
    stdout = run["stdout"]
    assert "preflight of profile paper" in stdout and "preflight: all OK" in stdout
    assert "device: cpu -> the CPU" in stdout   # the explicit flag, not a silent fallback
    for name in ("PaliGemma2 checkpoint", "Gemma3 checkpoint", "ConceptCLIP encoder", "evaluation embedder"):
        assert re.search(rf"{name}\s+OK", stdout), name
    for step in STEPS:
        assert f"[{step}] ok in" in stdout, step
        record = run["results"][step]
        assert record["config"]["profile"] == "paper" and record["config"]["device"] == "cpu"
        assert (run["out"] / "notebooks" / "paper" / f"{step}.ipynb").is_file()


def test_the_cpu_needs_the_explicit_flag(monkeypatch):
    import torch

    from cag_utils.run import preflight
    from cag_utils.run.config import load_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # as on CI, also on a machine with a GPU
    row = preflight.check_device(load_config("paper", "cnn"))
    assert not row.ok and "-p device=cpu" in row.detail
    assert preflight.check_device(load_config("paper", "cnn", {"device": "cpu"})).ok


def test_frames_are_stored_as_8_bit_jpeg_2000(run):
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    files = sorted((run["work"] / "raw").rglob("*.dcm"))
    assert len(files) >= OVERRIDES["n_annotation_exams"] + OVERRIDES["n_independent_exams"]
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == JPEG2000Lossless, path.name
        assert ds.BitsStored == 8 and ds.Rows == OVERRIDES["image_size"]
    assert ds.pixel_array.shape[-1] == OVERRIDES["image_size"]   # decodes
    assert run["results"]["01_data"]["results"]["exact"]["n_rejected_files"] == 0


def test_cnn_trivialaugment_pretraining_and_second_start(run):
    res = run["results"]["02_cnn"]["results"]
    cnn = run["work"] / "cnn"
    recipe = json.loads((cnn / res["training"]["checkpoint"] / "config.json").read_text())["config"]
    other = json.loads((cnn / res["other_start"]["checkpoint"] / "config.json").read_text())["config"]
    for cfg in (recipe, other):   # the recipes the two trainings ran with
        assert cfg["augment"] == "trivialaugment" and cfg["mixed_precision"] == "bf16"
        assert cfg["model_name"] == "convnext_atto" and cfg["epochs"] == OVERRIDES["cnn_epochs"]
        assert cfg["num_workers"] == OVERRIDES["cnn_num_workers"] > 0 and cfg["cpu"]   # DataLoader worker processes
    # The paper starts from the synthetic pretraining; the second start (cnn_compare_start) from random weights.
    assert res["start"] == "synthetic_angles" and recipe["pretrained_file"]
    assert res["pretraining"]["source"] == "synthetic_angles" and res["pretraining"]["epochs"] == 1
    assert res["other_start"]["start"] == "none" and res["other_start"]["status"] == "completed"
    assert other["pretrained_file"] is None and res["other_start"]["checkpoint"] != res["training"]["checkpoint"]
    assert {row["start"] for row in res["tables"]["pretraining_comparison"]} == {"synthetic_angles", "none"}
    assert set(res["other_start"]["intervals"]) == set(res["headline"])


def test_real_checkpoint_loaders_and_the_conceptclip_join(run):
    ck = run["checkpoints"]
    res = run["results"]["05_finetune"]["results"]
    exact = res["exact"]
    assert run["results"]["05_finetune"]["config"]["vlm_use_standins"] is False
    assert exact["standins"] == {} and exact["standins_git_sha"] == "" and res["probes"] == {}
    # Total minus LoRA parameters: the checkpoints written here, as AutoModelForImageTextToText read them.
    gemma3 = n_parameters(ck["vlm_gemma3_path"])
    base = {"paligemma": n_parameters(ck["vlm_paligemma_path"]), "gemma3": gemma3, "gemma3_text": gemma3,
            # the join: ConceptCLIP's image encoder in place of Gemma3's SigLIP tower (Gemma3's projector kept)
            "conceptclip_gemma3": gemma3 - n_parameters(ck["vlm_gemma3_path"], "vision_tower.")
                                  + n_parameters(ck["vlm_conceptclip_path"], "vision_model.")}
    assert base["conceptclip_gemma3"] != gemma3
    for family, n in base.items():
        assert exact[f"{family}.total_parameters"] - exact[f"{family}.trainable_parameters"] == n, family
        assert exact[f"{family}.steps"] > 0 and exact[f"{family}.n_used"]["test"] > 0
    assert all(exact[f"control.{f}.steps"] == OVERRIDES["vlm_control_max_steps"]
               for f in ("paligemma", "gemma3", "conceptclip_gemma3"))
    adapters = run["work"] / "vlm" / "adapters"
    assert all((adapters / name / "training.json").is_file() for name in res["adapters"].values())
    with gzip.open(run["out"] / "results" / "paper" / "05_finetune_predictions.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    assert {r["family"] for r in rows} == set(base)
    assert {r["variant"] for r in rows} == {"without_lora", "with_lora", "with_lora_blank_image"}


def test_vlscore_uses_the_evaluation_embedder_of_eval_embedder_path(run):
    record = run["results"]["06_evaluation"]
    res = record["results"]
    folder = run["checkpoints"]["eval_embedder_path"]
    assert record["config"]["eval_embedder_path"] == str(folder)
    assert res["vlscore"]["embedder"] == folder.name
    assert res["exact"]["embedder_text_tokens"] == EMBEDDER["caption_length"]   # its text tower, not a stand-in's
    scores = (run["out"] / "results" / "paper" / "06_evaluation_scores.csv").read_text().splitlines()
    assert len(scores) - 1 == res["exact"]["n_predictions"] > 0


def test_every_paper_setting_is_exercised_or_listed(run):
    """Each setting whose paper value differs from smoke's ran at its paper value (the results' effective
    config says so), or is overridden here for size with a reason (SHRUNK); the checkpoint settings, empty in
    both profiles and needed by paper only, point at the toy checkpoints."""
    differing = paper_only_values()
    assert set(SHRUNK) <= set(differing) | set(CHECKPOINT_KEYS), "SHRUNK lists settings paper shares with smoke"
    assert set(OVERRIDES) & set(differing) <= set(SHRUNK), "an override of a paper setting without a reason"
    configs = [r["config"] for r in run["results"].values()]
    unseen = []
    for key, paper_value in {**differing, **{k: None for k in CHECKPOINT_KEYS}}.items():
        seen = [c[key] for c in configs if key in c]
        if not seen:
            unseen.append(key)
            continue
        expected = (str(run["checkpoints"][key]) if key in CHECKPOINT_KEYS else OVERRIDES[key] if key in SHRUNK
                    else paper_value)
        assert all(v == expected for v in seen), (key, seen, expected)
    assert not unseen, f"no notebook's config holds {unseen}"
    assert not (set(OVERRIDES) - set(SHRUNK) - set(SIZE_ONLY)) and not set(SIZE_ONLY) & set(differing)


def test_nothing_was_written_into_the_repository(run):
    assert repo_outputs_status() <= run["repo_before"]
