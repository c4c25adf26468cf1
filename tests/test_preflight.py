"""cag_utils.run.preflight: every check OK and failing, the table, and the pipeline's use of it (no notebook runs)."""
from __future__ import annotations

import json
import re
import shutil
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cag_utils.data.ingest import LABEL_COLUMNS
from cag_utils.run import pipeline, preflight
from cag_utils.run.config import REPO_ROOT, load_config

ALL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json")
VLM_KINDS = ("config", "weights", "tokenizer", "processor")


def fake_checkpoint(folder: Path, model_type: str = "gemma3", files=ALL_FILES, **config) -> Path:
    """A checkpoint folder as the preflight sees it: the file names, and a config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).write_text("{}")
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, **config}))
    return folder


def smoke(section: str, **overrides) -> dict:
    return load_config("smoke", section, overrides)


# ---------------------------------------------------------------- checkpoint folders
def test_checkpoint_folder_with_every_file_is_ok(tmp_path):
    folder = fake_checkpoint(tmp_path / "gemma")
    row = preflight.check_checkpoint("Gemma3", "vlm_gemma3_path", str(folder), VLM_KINDS, ("gemma3",))
    assert row.ok and str(folder) in row.detail and "gemma3" in row.detail


def test_empty_setting_names_the_key_and_the_override(tmp_path):
    row = preflight.check_checkpoint("Gemma3", "vlm_gemma3_path", "", VLM_KINDS)
    assert not row.ok and "vlm_gemma3_path is empty" in row.problem and "-p vlm_gemma3_path=" in row.detail


@pytest.mark.parametrize("drop, named", [("tokenizer.json", "tokenizer"), ("model.safetensors", "weights"),
                                         ("preprocessor_config.json", "processor")])
def test_checkpoint_folder_missing_a_file(tmp_path, drop, named):
    folder = fake_checkpoint(tmp_path / "ckpt", files=[f for f in ALL_FILES if f != drop])
    row = preflight.check_checkpoint("Gemma3", "vlm_gemma3_path", str(folder), VLM_KINDS, ("gemma3",))
    assert not row.ok and named in row.problem


def test_sharded_weights_need_every_shard_of_the_index(tmp_path):
    files = [f for f in ALL_FILES if f != "model.safetensors"] + ["model-00001-of-00002.safetensors"]
    folder = fake_checkpoint(tmp_path / "ckpt", files=files)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    row = preflight.check_checkpoint("Gemma3", "vlm_gemma3_path", str(folder), VLM_KINDS, ("gemma3",))
    assert not row.ok and "model-00002-of-00002.safetensors" in row.problem
    (folder / "model-00002-of-00002.safetensors").write_text("")
    assert preflight.check_checkpoint("Gemma3", "vlm_gemma3_path", str(folder), VLM_KINDS, ("gemma3",)).ok


def test_wrong_model_type_and_remote_code(tmp_path):
    text_only = fake_checkpoint(tmp_path / "gemma3-1b", "gemma3_text")
    row = preflight.check_checkpoint("Gemma3", "vlm_gemma3_path", str(text_only), VLM_KINDS, ("gemma3",))
    assert not row.ok and "'gemma3_text'" in row.problem
    own_code = fake_checkpoint(tmp_path / "conceptclip", "conceptclip", auto_map={"AutoModel": "m.ConceptCLIP"})
    args = ("ConceptCLIP", "vlm_conceptclip_path", str(own_code), ("config", "weights"), ("siglip",))
    row = preflight.check_checkpoint(*args, trust_remote_code=False)
    assert not row.ok and "vlm_conceptclip_trust_remote_code=true" in row.detail
    assert preflight.check_checkpoint(*args, trust_remote_code=True).ok
    # Only the ConceptCLIP loader may run a folder's code: by default, and for other settings, such a folder fails.
    assert not preflight.check_checkpoint(*args).ok
    gemma_code = fake_checkpoint(tmp_path / "gemma-own-code", "gemma3_custom", auto_map={"AutoModel": "m.G"})
    row = preflight.check_checkpoint("Gemma3", "vlm_gemma3_path", str(gemma_code), VLM_KINDS, ("gemma3",))
    assert not row.ok and "point vlm_gemma3_path at a gemma3 checkpoint" in row.detail


def test_missing_folder_relative_paths_and_downloads(tmp_path, monkeypatch):
    row = preflight.check_checkpoint("Gemma3", "vlm_gemma3_path", str(tmp_path / "nowhere"), VLM_KINDS)
    assert not row.ok and "neither a folder" in row.problem and "/absolute/path" in row.detail
    hub = preflight.check_checkpoint("Gemma3", "vlm_gemma3_path", "someone/not-cached-xyz", VLM_KINDS)
    assert not hub.ok and "huggingface-cli download someone/not-cached-xyz" in hub.detail
    assert preflight.check_checkpoint("Gemma3", "vlm_gemma3_path", "someone/not-cached-xyz", VLM_KINDS,
                                      allow_download=True).ok
    # Relative paths are read from the notebooks' working folder, as the notebooks read them.
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setattr(preflight, "NOTEBOOK_CWD", tmp_path / "notebooks")
    fake_checkpoint(tmp_path / "models" / "gemma")
    assert preflight.check_checkpoint("Gemma3", "k", "../models/gemma", VLM_KINDS, ("gemma3",)).ok
    assert not preflight.check_checkpoint("Gemma3", "k", "models/gemma", VLM_KINDS, ("gemma3",)).ok


def test_smoke_standins_ok_and_missing(tmp_path):
    assert preflight.check_finetune(smoke("finetune"))[0].ok
    row = preflight.check_finetune(smoke("finetune", vlm_standins_dir=str(tmp_path / "none")))[0]
    assert not row.ok and "make standins" in row.detail
    # A part whose files are gone.
    copy = tmp_path / "standins"
    shutil.copytree(REPO_ROOT / "models" / "standins" / "smoke", copy)
    (copy / "lm" / "model.safetensors").unlink()
    row = preflight.check_finetune(smoke("finetune", vlm_standins_dir=str(copy)))[0]
    assert not row.ok and "lm: weights" in row.problem


def paper_finetune(tmp_path: Path, **overrides) -> dict:
    paths = {"vlm_paligemma_path": str(fake_checkpoint(tmp_path / "paligemma2", "paligemma")),
             "vlm_gemma3_path": str(fake_checkpoint(tmp_path / "gemma3")),
             "vlm_conceptclip_path": str(fake_checkpoint(tmp_path / "conceptclip", "siglip_vision_model",
                                                         ("config.json", "model.safetensors")))}
    return load_config("paper", "finetune", {**paths, **overrides})


def test_paper_checkpoints_one_row_per_folder(tmp_path):
    rows = preflight.check_finetune(paper_finetune(tmp_path))
    assert [r.check for r in rows] == ["PaliGemma2 checkpoint", "Gemma3 checkpoint", "ConceptCLIP encoder"]
    assert all(r.ok for r in rows)
    rows = preflight.check_finetune(paper_finetune(tmp_path, vlm_conceptclip_path=""))
    assert [r.ok for r in rows] == [True, True, False]
    only_paligemma = preflight.check_finetune(paper_finetune(tmp_path, vlm_families=["paligemma"], vlm_gemma3_path=""))
    assert [r.check for r in only_paligemma] == ["PaliGemma2 checkpoint"] and only_paligemma[0].ok


def test_finetune_settings_are_checked_first(tmp_path):
    rows = preflight.check_finetune(paper_finetune(tmp_path, vlm_families=["llava"]))
    assert len(rows) == 1 and rows[0].check == "fine-tuning settings" and "llava" in rows[0].problem


def test_evaluation_embedder(tmp_path):
    assert preflight.check_evaluation(smoke("evaluation"))[0].ok   # the committed ConceptCLIP stand-in
    paper = load_config("paper", "evaluation")
    row = preflight.check_evaluation(paper)[0]
    assert not row.ok and "eval_embedder_path is empty" in row.problem
    folder = fake_checkpoint(tmp_path / "embedder", "siglip")
    assert preflight.check_evaluation({**paper, "eval_embedder_path": str(folder)})[0].ok
    vision_only = fake_checkpoint(tmp_path / "vision", "siglip_vision_model")
    assert not preflight.check_evaluation({**paper, "eval_embedder_path": str(vision_only)})[0].ok


def test_evaluation_embedder_with_its_own_model_code_is_refused(tmp_path):
    """A folder with its own model code (ConceptCLIP's published format): notebook 06's SiglipModel would read it
    with random weights where the names differ, so the preflight refuses it, whatever
    vlm_conceptclip_trust_remote_code says (it used to accept any folder with an auto_map)."""
    paper = load_config("paper", "evaluation")
    own_code = fake_checkpoint(tmp_path / "conceptclip", "conceptclip", auto_map={"AutoModel": "m.ConceptCLIP"})
    row = preflight.check_evaluation({**paper, "eval_embedder_path": str(own_code)})[0]
    assert not row.ok and "point eval_embedder_path at a siglip checkpoint" in row.detail


def test_notebook_06_reads_the_embedder_folder_the_preflight_checked(tmp_path, monkeypatch):
    """evaluation.embedder_folder resolves eval_embedder_path as the preflight does: relative paths from
    notebooks/, and a hub id from the local Hugging Face cache (it used to take the text as a folder)."""
    from huggingface_hub import constants

    from cag_utils.evaluation import evaluation

    paper = load_config("paper", "evaluation")
    repo = tmp_path / "models--someone--embedder"
    snapshot = fake_checkpoint(repo / "snapshots" / ("a" * 40), "siglip")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    cfg = {**paper, "eval_embedder_path": "someone/embedder"}
    assert preflight.check_evaluation(cfg)[0].ok
    assert evaluation.embedder_folder(cfg, None) == snapshot
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setattr(preflight, "NOTEBOOK_CWD", tmp_path / "notebooks")
    relative = {**paper, "eval_embedder_path": f"../{snapshot.relative_to(tmp_path)}"}
    assert preflight.check_evaluation(relative)[0].ok
    assert evaluation.embedder_folder(relative, None) == snapshot.resolve()
    missing = {**paper, "eval_embedder_path": "someone/not-cached"}
    assert not preflight.check_evaluation(missing)[0].ok
    with pytest.raises(FileNotFoundError, match="someone/not-cached"):
        evaluation.embedder_folder(missing, None)


# ---------------------------------------------------------------- device, disk, data
Free = namedtuple("Free", "total used free")


@pytest.mark.parametrize("device, gpu, ok", [("cuda", False, False), ("cuda", True, True), ("cpu", False, True),
                                             ("auto", False, True), ("auto", True, True), ("tpu", True, False)])
def test_cuda_device(monkeypatch, device, gpu, ok):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU")
    row = preflight.check_device({"device": device})
    assert row.ok == ok
    if device == "cuda" and not gpu:
        assert "-p device=cpu" in row.detail
    if ok and gpu and device != "cpu":
        assert "Fake GPU" in row.detail


def test_paper_profile_asks_for_a_gpu():
    assert load_config("paper")["device"] == "cuda"


def test_disk_space(tmp_path, monkeypatch):
    monkeypatch.setenv("CAG_OUTPUT_ROOT", str(tmp_path))   # no cohort generated yet, whatever ran before
    cfg = smoke("data")
    row = preflight.check_disk(cfg)
    assert row.ok and "GB for the cohort" in row.detail
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Free(10**9, 10**9, 1000))
    row = preflight.check_disk(cfg)
    assert not row.ok and "not enough disk space" in row.problem and "CAG_OUTPUT_ROOT" in row.detail
    monkeypatch.setattr("cag_utils.synth.cohort.cohort_is_current", lambda raw, cfg: True)
    assert preflight.check_disk(cfg).ok   # already generated: nothing to write


def real_data(tmp_path: Path, **overrides) -> dict:
    for cohort in ("annotation", "independent"):
        (tmp_path / "export" / cohort).mkdir(parents=True, exist_ok=True)
    return smoke("data", data_source="dicom_dir", dicom_dir=str(tmp_path / "export"), **overrides)


def test_real_exams_need_their_folders_and_a_secret_salt(tmp_path, monkeypatch):
    monkeypatch.setenv("CAG_DEID_SALT", "a-secret-salt-of-some-length")
    rows = {r.check: r for r in preflight.check_data(real_data(tmp_path))}
    assert rows["DICOM exams"].ok and rows["de-identification salt"].ok
    monkeypatch.delenv("CAG_DEID_SALT")
    rows = {r.check: r for r in preflight.check_data(real_data(tmp_path))}
    salt = rows["de-identification salt"]
    assert not salt.ok and "no secret salt" in salt.problem and "CAG_DEID_SALT" in salt.detail
    shutil.rmtree(tmp_path / "export" / "independent")
    cfg = smoke("data", data_source="dicom_dir", dicom_dir=str(tmp_path / "export"))
    rows = {r.check: r for r in preflight.check_data(cfg)}
    assert not rows["DICOM exams"].ok and "independent" in rows["DICOM exams"].problem
    assert not preflight.check_data(smoke("data", data_source="dicom_dir"))[0].ok   # dicom_dir empty
    assert not preflight.check_data(smoke("data", data_source="pacs"))[0].ok


def test_labels_and_reports_files(tmp_path, monkeypatch):
    monkeypatch.setenv("CAG_DEID_SALT", "a-secret-salt-of-some-length")
    labels, reports = tmp_path / "labels.csv", tmp_path / "reports.jsonl"
    labels.write_text(",".join(("file", "frame", *LABEL_COLUMNS)) + "\nannotation/e1/r1.dcm,3,left,best\n")
    reports.write_text(json.dumps({"exam": "annotation/e1", "pre_procedure_report": "x"}) + "\nnot json\n")
    cfg = real_data(tmp_path, labels_csv=str(labels), reports_jsonl=str(reports))
    rows = {r.check: r for r in preflight.check_data(cfg)}
    assert rows["labels_csv"].ok and "1 label rows" in rows["labels_csv"].detail
    assert rows["reports_jsonl"].ok and "1 of 2 lines" in rows["reports_jsonl"].detail
    labels.write_text("file,frame\nx,1\n")
    reports.write_text("not json\n[1, 2]\n")
    rows = {r.check: r for r in preflight.check_data(cfg)}
    assert not rows["labels_csv"].ok and "laterality" in rows["labels_csv"].problem
    assert not rows["reports_jsonl"].ok and "'exam'" in rows["reports_jsonl"].problem
    rows = {r.check: r for r in preflight.check_data({**cfg, "labels_csv": str(tmp_path / "gone.csv")})}
    assert not rows["labels_csv"].ok and "no file" in rows["labels_csv"].problem


def test_cnn_architecture_and_pretrained_file(tmp_path):
    assert all(r.ok for r in preflight.check_cnn(smoke("cnn")))
    assert not preflight.check_cnn(smoke("cnn", cnn_model="convnext_huge_typo"))[0].ok
    row = preflight.check_cnn(smoke("cnn", cnn_pretrained_file=str(tmp_path / "imagenet.safetensors")))[1]
    assert not row.ok and "imagenet.safetensors" in row.problem
    (tmp_path / "imagenet.safetensors").write_text("")
    assert preflight.check_cnn(smoke("cnn", cnn_pretrained_file=str(tmp_path / "imagenet.safetensors")))[1].ok


# ---------------------------------------------------------------- steps, table, pipeline
STEPS = [SimpleNamespace(name=n, section=s) for n, s in (("01_data", "data"), ("02_cnn", "cnn"),
                                                         ("05_finetune", "finetune"))]


def test_check_steps_settings_overrides_skips_and_one_device_row(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rows = preflight.check_steps("smoke", STEPS, {"cnn_epochs": 2}, up_to_date=["01_data"])
    assert [(r.step, r.check) for r in rows] == [
        ("all", "overrides"), ("01_data", "up to date"), ("02_cnn", "settings"), ("02_cnn", "CUDA device"),
        ("02_cnn", "CNN architecture"), ("05_finetune", "settings"), ("05_finetune", "stand-in checkpoints")]
    assert all(r.ok for r in rows) and "cnn_epochs=2" in rows[2].detail
    unknown = preflight.check_steps("smoke", STEPS, {"nope": 1})[0]
    assert not unknown.ok and "'nope'" in unknown.problem and "known:" not in unknown.problem
    bad = preflight.check_steps("smoke", STEPS, {"cnn_epochs": "many"})
    cnn = [r for r in bad if r.step == "02_cnn"]
    assert len(cnn) == 1 and not cnn[0].ok and "'cnn_epochs'" in cnn[0].problem
    paper = preflight.check_steps("paper", STEPS[1:], {})   # device: cuda, no GPU
    assert [r.ok for r in paper if r.check == "CUDA device"] == [False]


def test_table_format():
    rows = [preflight.Row("overrides", detail="none", step="all"),
            preflight.Row("Gemma3 checkpoint", "vlm_gemma3_path is empty", "set it " + "and wrap " * 20,
                          step="05_finetune")]
    lines = preflight.format_table(rows).splitlines()
    assert lines[0].split() == ["step", "check", "result"] and set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["all", "overrides", "OK", "none"]
    assert lines[3].startswith("05_finetune  Gemma3 checkpoint  PROBLEM  vlm_gemma3_path is empty. Fix: set it")
    column = lines[3].index("PROBLEM")
    assert lines[4].startswith(" " * column) and lines[4][column] != " "   # wrapped under the result column
    assert all(len(line) <= 110 for line in lines)
    assert lines[-1] == "preflight: 1 problem(s); nothing was run"
    assert preflight.format_table(rows[:1]).splitlines()[-1] == "preflight: all OK"


def roots(tmp_path: Path) -> list[str]:
    """Output folders of the pipeline in tmp_path: nothing of the repository is read as up to date or written."""
    return [arg for name in ("results", "figures", "work", "runs", "executed")
            for arg in (f"--{name}-root", str(tmp_path / name))]


def test_check_passes_on_the_smoke_profile(capsys):
    assert pipeline.main(["--profile", "smoke", "--check"]) == 0
    out = capsys.readouterr().out
    assert "stand-in checkpoints" in out and "evaluation embedder" in out
    assert out.rstrip().endswith("preflight: all OK")


def test_check_reports_wrong_overrides_in_the_table(tmp_path, capsys):
    assert pipeline.main(["--profile", "smoke", "--check", "--only", "02", "-p", "nope=1", *roots(tmp_path)]) == 2
    assert "PROBLEM  unknown parameter 'nope'" in capsys.readouterr().out


def test_a_run_stops_before_step_01_when_a_later_step_lacks_its_checkpoint(tmp_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("a step ran although the preflight failed")

    monkeypatch.setattr(pipeline, "_run_step", never)
    monkeypatch.setattr(pipeline.pm, "execute_notebook", never)
    argv = ["--profile", "smoke", "-p", f"vlm_standins_dir={tmp_path / 'no-standins'}", "--run-name", "x",
            *roots(tmp_path)]
    assert pipeline.main(argv) == 2
    out = capsys.readouterr().out
    assert re.search(r"\n05_finetune +stand-in checkpoints +PROBLEM", out) and "nothing was run" in out
    assert not (tmp_path / "work").exists() and not (tmp_path / "runs").exists()


def test_a_run_that_passes_the_preflight_goes_on_to_its_steps(tmp_path, monkeypatch, capsys):
    ran = []

    def fake_step(step, *args, **kwargs):
        ran.append(step.name)
        return pipeline.StepOutcome(step.name, step.section, "ok")

    monkeypatch.setattr(pipeline, "_run_step", fake_step)
    assert pipeline.main(["--profile", "smoke", "--only", "04", *roots(tmp_path)]) == 0
    assert ran == ["04_corpus"] and "preflight: all OK" in capsys.readouterr().out
