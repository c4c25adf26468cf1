"""Self-checking caches (cag_utils.run.cachecheck): each stage-1/2 cache kind with a truncated and a
bit-flipped file is either rebuilt (logged) or refused with a CacheError naming the folder and
the command that rebuilds it."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cag_utils.cnn import pretrain
from cag_utils.cnn.train import load_trained, train_classifier
from cag_utils.corpus import corpus
from cag_utils.data import ingest
from cag_utils.data.labels import CLASSES, split_class
from cag_utils.run.cachecheck import SUMS_NAME, CacheError, check_file, check_folder, fix_command, seal, write_sums

DAMAGE = ["truncated", "bit_flipped"]


def damage(path: Path, how: str, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: int(len(data) * at)]))
    else:
        data[int(len(data) * at)] ^= 0x10
        path.write_bytes(bytes(data))


def test_sums_find_truncation_and_bit_flips(tmp_path):
    (tmp_path / "a.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "b.bin").write_bytes(b"b" * 100)
    write_sums(tmp_path, ["a.bin", "b.bin"])
    seal(tmp_path / "b.bin")
    assert check_folder(tmp_path) == [] and check_file(tmp_path / "b.bin") is None
    damage(tmp_path / "a.bin", "bit_flipped")
    damage(tmp_path / "b.bin", "truncated")
    assert check_folder(tmp_path) == [f"{n} does not match its recorded sha256 (truncated or altered)"
                                      for n in ("a.bin", "b.bin")]
    assert "b.bin does not match" in check_file(tmp_path / "b.bin")
    assert fix_command(tmp_path / "data" / "work" / "paper" / "corpus", "04") == \
        "python -m cag_utils.run.pipeline --profile paper --only 04 --force"


# --------------------------------------------------------------------------- processed cohorts
def _cohort(folder: Path) -> Path:
    frames = np.random.default_rng(0).integers(0, 256, (20, 16, 16)).astype(np.uint8)
    table = pd.DataFrame({"frame_uid": [f"F{i}" for i in range(20)], "patient_id": ["PT-1"] * 20})
    return ingest.save_dataset(folder, frames, {"frames": table, "rejects": pd.DataFrame({"exam_id": []})})


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("name", ["frames.npy", "frames.parquet"])
def test_damaged_processed_cohort_stops_naming_folder_and_fix(tmp_path, how, name):
    folder = _cohort(tmp_path / "data" / "work" / "smoke" / "processed" / "abc" / "annotation")
    assert (folder / SUMS_NAME).is_file() and len(ingest.load_dataset(folder)[0]) == 20
    damage(folder / name, how, at=0.9)
    with pytest.raises(CacheError) as info:
        ingest.load_dataset(folder)
    message = str(info.value)
    assert "data/work/smoke/processed/abc/annotation" in message and name in message
    assert "python -m cag_utils.run.pipeline --profile smoke --only 01 --force" in message


def test_processed_cohort_without_hashes_is_still_checked_for_readability(tmp_path):
    folder = _cohort(tmp_path / "c")
    (folder / SUMS_NAME).unlink()  # written before the checks existed
    damage(folder / "frames.npy", "truncated", at=0.05)  # cut inside the .npy header
    with pytest.raises(CacheError, match="unreadable"):
        ingest.load_dataset(folder)


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_pretraining_cohort_is_rebuilt(tmp_path, monkeypatch, caplog, how):
    out = _cohort(tmp_path / "pretrain-x" / "cohort")
    built = []

    def rebuild(*args, **kwargs):  # generation stands in: what matters is that it is called
        built.append(1)
        raise RuntimeError("rebuilding")

    monkeypatch.setattr("cag_utils.synth.cohort.generate_cohort", rebuild)
    assert len(pretrain.build_aux_cohort({"num_workers": 1}, out)[0]) == 20 and not built  # intact: the cache
    damage(out / "frames.parquet", how)
    with caplog.at_level(logging.WARNING, logger="cag_utils.cache"), pytest.raises(RuntimeError, match="rebuilding"):
        pretrain.build_aux_cohort({"num_workers": 1}, out)
    assert built and any("pretraining cohort pretrain-x is damaged" in m for m in caplog.messages)


# --------------------------------------------------------------------------- CNN checkpoints
SIZE = 32
CFG = dict(input_size=SIZE, epochs=1, batch_size=16, lr=3e-4, augment="none", progress=False, seed=5,
           model_kwargs={"depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32)})


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (48, SIZE, SIZE)).astype(np.uint8)
    rows = [dict(frame_uid=f"f{i}", patient_id=f"p{i % 8}", label=i % len(CLASSES),
                 laterality=split_class(i % len(CLASSES))[0], key_frame_category=split_class(i % len(CLASSES))[1],
                 split=("train", "train", "val")[i % 3]) for i in range(48)]
    return frames, pd.DataFrame(rows)


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_checkpoint_refused_by_the_reader_and_retrained_by_the_trainer(tmp_path, data, caplog, how):
    frames, table = data
    out = tmp_path / "data" / "work" / "smoke" / "cnn" / "convnext_atto-123"
    first = train_classifier(frames, table, CFG, out, resume=True)
    original = (out / "best.safetensors").read_bytes()
    assert (out / "best.safetensors.sha256").is_file() and (out / "last_state.pt.sha256").is_file()
    damage(out / "best.safetensors", how, at=0.6)  # past the header: a flip here loads fine, hashes wrong
    with pytest.raises(CacheError) as info:  # notebook 03: a clear stop, not SafetensorError forever
        load_trained(out)
    assert "data/work/smoke/cnn/convnext_atto-123" in str(info.value)
    assert "python -m cag_utils.run.pipeline --profile smoke --only 02 --force" in str(info.value)
    with caplog.at_level(logging.WARNING, logger="cag_utils.cache"):  # notebook 02: retrains it
        again = train_classifier(frames, table, CFG, out, resume=True)
    assert any("checkpoint convnext_atto-123 is damaged" in m and "first epoch" in m for m in caplog.messages)
    assert again.epochs_completed == first.epochs_completed == 1
    assert (out / "best.safetensors").read_bytes() == original  # the same weights as the first run
    model, info = load_trained(out)
    assert isinstance(model, torch.nn.Module)


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_pretrained_backbone_is_detected(tmp_path, data, how):
    from cag_utils.cnn.train import _save_weights, _write_json

    out = tmp_path / "backbone"
    out.mkdir()
    _save_weights({"w": torch.arange(4096, dtype=torch.float32)}, out / pretrain.BACKBONE_FILE, 1)
    _write_json(out / "pretrain.json", {"history": []})
    assert pretrain.backbone_problem(out) is None
    damage(out / pretrain.BACKBONE_FILE, how, at=0.7)
    assert "backbone.safetensors does not match" in pretrain.backbone_problem(out)


# --------------------------------------------------------------------------- corpus
def _records(n: int = 6) -> tuple[pd.DataFrame, np.ndarray]:
    frames = np.random.default_rng(2).integers(0, 256, (n, 24, 24)).astype(np.uint8)
    rows = []
    for i in range(n):
        row = {f: "" for f in corpus.RECORD_FIELDS}
        row.update(frame_position=i, file_name=f"images/F{i}.png", frame_uid=f"F{i}", patient_id=f"PT-{i}",
                   exam_id=f"EX-{i}", run_id=f"EX-{i}-R01", split=("train", "val", "test")[i % 3])
        rows.append(row)
    return pd.DataFrame(rows), frames


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_corpus_stops_naming_folder_and_fix(tmp_path, how):
    records, frames = _records()
    out = corpus.write_corpus(tmp_path / "data" / "work" / "smoke" / "corpus", records, frames, "datasheet")
    assert corpus.load_corpus(out)["train"].num_rows == 2
    damage(out / "train" / "images" / "F0.png", how)
    with pytest.raises(CacheError) as info:
        corpus.load_corpus(out)
    message = str(info.value)
    assert "data/work/smoke/corpus" in message and "train/images/F0.png" in message
    assert "python -m cag_utils.run.pipeline --profile smoke --only 04 --force" in message
