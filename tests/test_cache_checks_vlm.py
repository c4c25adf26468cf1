"""Self-checking caches of stage 3 and of the raw cohort (cag_utils.vlm.sealed, synth.cohort): the smoke stand-ins,
the VLScore embedder stand-in, assembled VLMs, LoRA adapters and the generated DICOM cohort, each with a truncated
and a bit-flipped file, are rebuilt (logged) or refused with a CacheError naming the folder and the fix. Tiny
fixtures in tmp_path; the committed stand-ins are only read."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cag_utils.run.cachecheck import SUMS_NAME, CacheError, check_folder
from cag_utils.run.config import REPO_ROOT, load_config
from cag_utils.synth.cohort import generate_cohort
from cag_utils.vlm import embedder_standin, lora, make_standins, sealed, stage, standins

DAMAGE = ["truncated", "bit_flipped"]
FT = load_config("smoke", "finetune")


def damage(path: Path, how: str, at: float = 0.7) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: int(len(data) * at)]))
    else:
        data[int(len(data) * at)] ^= 0x10
        path.write_bytes(bytes(data))


def _weights(folder: Path, record: dict | None = None) -> Path:
    """A tiny part folder: weights, config and its record."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.arange(2048, dtype=torch.float32)}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"hidden_size": 8}))
    (folder / standins.DONE).write_text(json.dumps(record or {"kind": "tiny"}))
    return folder


# --------------------------------------------------------------------------- committed stand-ins
def test_committed_standin_parts_carry_sums_that_match():
    root = REPO_ROOT / FT["vlm_standins_dir"]
    for name in make_standins.PARTS:
        assert (root / name / SUMS_NAME).is_file(), \
            f"{name}: no SHA256SUMS; run python -m cag_utils.vlm.make_standins --profile smoke --seal"
        assert check_folder(root / name) == []
    if (root / embedder_standin.NAME / SUMS_NAME).is_file():
        assert check_folder(root / embedder_standin.NAME) == []


def _standins(root: Path, sums: bool = True) -> dict:
    cfg = {**FT, "vlm_standins_dir": str(root)}
    for name in make_standins.PARTS:
        _weights(root / name)
    prov = {"settings": make_standins.params(cfg), "aux_cohort": {"patients": ["PT-AUX"]}}
    (root / "provenance.json").write_text(json.dumps(prov))
    written = make_standins.seal_parts(root, list(make_standins.PARTS)) if sums else []
    assert len(written) == (len(make_standins.PARTS) if sums else 0)
    return cfg


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_standin_stops_naming_folder_and_make_standins(tmp_path, how):
    cfg = _standins(tmp_path / "standins")
    assert set(stage.load_standins(cfg, set())["folders"]) == set(make_standins.PARTS)
    damage(tmp_path / "standins" / "siglip" / "model.safetensors", how)
    with pytest.raises(CacheError) as info:
        stage.load_standins(cfg, set())
    message = str(info.value)
    assert "standins/siglip" in message and "model.safetensors does not match" in message
    assert "make standins (python -m cag_utils.vlm.make_standins --profile smoke)" in message


def test_standin_without_sums_is_checked_for_readability(tmp_path):
    cfg = _standins(tmp_path / "standins", sums=False)
    stage.load_standins(cfg, set())
    damage(tmp_path / "standins" / "lm" / "model.safetensors", "truncated")
    with pytest.raises(CacheError, match="model.safetensors is unreadable"):
        stage.load_standins(cfg, set())
    (tmp_path / "standins" / "provenance.json").write_text("{")
    with pytest.raises(CacheError, match="provenance.json is unreadable"):
        stage.load_standins(cfg, set())


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_embedder_standin_stops_naming_folder_and_fix(tmp_path, how):
    ft, ev = embedder_standin.configs("smoke")
    ft = {**ft, "vlm_standins_dir": str(tmp_path / "standins")}
    record = {"settings": json.loads(json.dumps(embedder_standin.params(ft, ev))), "patients": ["PT-AUX"]}
    folder = _weights(tmp_path / "standins" / embedder_standin.NAME, record)
    make_standins.main(["--out", str(tmp_path / "standins"), "--seal", "--only", "embedder"])
    assert embedder_standin.load_folder(ft, ev, set()) == folder
    damage(folder / "model.safetensors", how)
    with pytest.raises(CacheError) as info:
        embedder_standin.load_folder(ft, ev, set())
    assert "standins/embedder" in str(info.value)
    assert "python -m cag_utils.vlm.make_standins --profile smoke --only embedder" in str(info.value)


# --------------------------------------------------------------------------- assembled VLMs
@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_assembled_vlm_is_built_again(tmp_path, caplog, how):
    folder = tmp_path / "data" / "work" / "smoke" / "vlm" / "gemma3-siglip-abc"
    builds = []

    def build(f: Path) -> dict:
        builds.append(1)
        _weights(f)
        return {"kind": "vlm"}

    assert standins.cached(folder, build)["cached"] is False and (folder / SUMS_NAME).is_file()
    assert standins.cached(folder, build)["cached"] is True and len(builds) == 1
    damage(folder / "model.safetensors", how)
    with caplog.at_level(logging.WARNING, logger="cag_utils.cache"):
        assert standins.cached(folder, build)["cached"] is False
    assert len(builds) == 2 and check_folder(folder) == []
    assert any("gemma3-siglip-abc is damaged" in m and "building it again" in m for m in caplog.messages)


# --------------------------------------------------------------------------- LoRA adapters
class _Adapter:
    """Stands in for a peft model: ``save_pretrained`` writes an adapter's files."""

    def save_pretrained(self, folder: Path) -> None:
        save_file({"lora_A": torch.ones(64, 16)}, Path(folder) / "adapter_model.safetensors")
        (Path(folder) / "adapter_config.json").write_text(json.dumps({"r": 4}))


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_adapter_is_trained_again(tmp_path, caplog, how):
    folder = tmp_path / "data" / "work" / "smoke" / "vlm" / "adapters" / "gemma3-lora-abc"
    (folder / "trainer").mkdir(parents=True)
    (folder / "trainer" / "scratch.txt").write_text("the Trainer's own files are not sealed")
    lora.save_adapter(_Adapter(), folder, {"steps": 2})
    assert "trainer/scratch.txt" not in (folder / SUMS_NAME).read_text()
    assert stage.reusable_adapter(folder)
    damage(folder / "adapter_model.safetensors", how)
    with caplog.at_level(logging.WARNING, logger="cag_utils.cache"):
        assert not stage.reusable_adapter(folder)
    assert not folder.exists()   # removed: finetune_family trains and saves it again
    assert any("LoRA adapter" in m and "gemma3-lora-abc" in m and "training it again" in m for m in caplog.messages)


def test_adapter_without_sums_is_checked_for_readability(tmp_path):
    folder = tmp_path / "adapter"
    lora.save_adapter(_Adapter(), folder, {"steps": 2})
    (folder / SUMS_NAME).unlink()
    assert stage.reusable_adapter(folder)
    damage(folder / "adapter_model.safetensors", "truncated")
    assert not stage.reusable_adapter(folder)


# --------------------------------------------------------------------------- raw synthetic cohort
TINY = {"n_annotation_exams": 1, "n_independent_exams": 1, "image_size": 32, "run_seconds": [0.5, 0.6],
        "num_workers": 1}


@pytest.fixture(scope="module")
def tiny_raw(tmp_path_factory):
    cfg = load_config("smoke", "data", TINY)
    return generate_cohort(tmp_path_factory.mktemp("raw") / "raw", cfg, workers=1, progress=False), cfg


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_raw_cohort_is_generated_again(tiny_raw, tmp_path, caplog, how):
    original, cfg = tiny_raw
    raw = shutil.copytree(original, tmp_path / "data" / "work" / "smoke" / "raw")
    assert check_folder(raw) == [] and "labels.csv" in (raw / SUMS_NAME).read_text()
    dcm = sorted(raw.glob("annotation/*/run_01.dcm"))[0]
    intact, mtime = dcm.read_bytes(), (raw / "labels.csv").stat().st_mtime_ns
    assert generate_cohort(raw, cfg, workers=1, progress=False) == raw   # intact: reused as it is
    assert (raw / "labels.csv").stat().st_mtime_ns == mtime
    damage(dcm, how)
    with caplog.at_level(logging.WARNING, logger="cag_utils.cache"):
        generate_cohort(raw, cfg, workers=1, progress=False)
    assert any("raw cohort data/work/smoke/raw is damaged" in m and dcm.name in m for m in caplog.messages)
    assert dcm.read_bytes() == intact and check_folder(raw) == []   # the same cohort, generated again


def test_raw_cohort_without_sums_checks_labels_and_files(tiny_raw, tmp_path, caplog):
    original, cfg = tiny_raw
    raw = shutil.copytree(original, tmp_path / "raw")
    (raw / SUMS_NAME).unlink()   # generated before the sums existed
    dcm = sorted(raw.glob("annotation/*/run_02.dcm"))[0]
    dcm.unlink()
    with caplog.at_level(logging.WARNING, logger="cag_utils.cache"):
        generate_cohort(raw, cfg, workers=1, progress=False)
    assert any("labelled file(s) missing" in m for m in caplog.messages) and dcm.is_file()
    assert (raw / SUMS_NAME).is_file()
