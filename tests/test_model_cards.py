"""Model cards (cag_utils.run.model_cards): every saved model folder carries a Hugging Face card (README.md with YAML
metadata) whose numbers are those of its records, with their intervals, and which names no patient and no date.
Cards are written into folders in tmp_path; the committed stand-ins are only read."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from cag_utils.run import model_cards
from cag_utils.run.cachecheck import SUMS_NAME, check_folder
from cag_utils.cnn.card import cnn_spec
from cag_utils.run.config import REPO_ROOT, load_config
from cag_utils.vlm import cards, embedder_standin, lora, make_standins
from cag_utils.vlm.sealed import seal_folder

FT = load_config("smoke", "finetune")
STANDINS = REPO_ROOT / FT["vlm_standins_dir"]
PARTS = [*make_standins.PARTS, embedder_standin.NAME]


def committed(name: str) -> dict:
    return json.loads((REPO_ROOT / "results" / f"{name}.json").read_text(encoding="utf-8"))


def results_dir(tmp_path: Path, **records: dict) -> Path:
    folder = tmp_path / "results"
    folder.mkdir(exist_ok=True)
    for name, record in records.items():
        (folder / f"{name}.json").write_text(json.dumps(record))
    return folder


def metric_records(card: ModelCard) -> dict[str, dict]:
    return {r["key"]: r for r in card.data.to_dict().get("metric_records") or []}


def assert_interval(record: dict, iv: dict) -> None:
    """The card's number and interval are the record's, to the last bit (YAML round-trips floats exactly)."""
    assert record["value"] == iv["estimate"]
    assert (record.get("ci_low"), record.get("ci_high"), record.get("n_patients")) == \
        (iv["ci_low"], iv["ci_high"], iv["n_patients"])


def assert_private(text: str, tmp_path: Path | None = None) -> None:
    """No pseudonymous patient ID, no date and no machine path in a card."""
    assert not re.search(r"\bPT-[0-9a-f]", text)
    assert not re.search(r"\b(19|20)\d\d-\d\d-\d\d\b", text)
    assert tmp_path is None or str(tmp_path) not in text


# --------------------------------------------------------------------------- CNN checkpoint
def checkpoint(root: Path, name: str = "convnext_atto-abc123def456") -> Path:
    """A checkpoint folder as train_classifier leaves it (weights left out: the card reads config.json)."""
    folder = root / "data" / "work" / "smoke" / "cnn" / name
    folder.mkdir(parents=True)
    config = {"model_name": "convnext_atto", "in_chans": 1, "input_size": 64, "seed": 7, "epochs": 2,
              "augment": "none", "pretrained_file": None}
    (folder / "config.json").write_text(json.dumps({"config": config, "classes": ["LCA_better", "RCA_others"],
                                                    "best_epoch": 2, "best_val_macro_f1": 0.4375, "n_train": 10,
                                                    "n_val": 4}))
    return folder


def test_cnn_card_loads_back_with_the_test_scores_of_its_results_record(tmp_path):
    folder = checkpoint(tmp_path)
    r02 = committed("02_cnn")
    r02["results"]["training"]["checkpoint"] = folder.name   # the record names this folder
    results = results_dir(tmp_path, **{"02_cnn": r02, "01_data": committed("01_data")})
    assert model_cards.write(folder, cnn_spec(folder, results))
    card = ModelCard.load(folder / model_cards.CARD)

    assert (card.data.library_name, card.data.license, card.data.datasets) == ("timm", "mit", ["synthetic"])
    assert card.data.base_model is None   # random initialisation
    head = r02["results"]["headline"]
    found = metric_records(card)
    assert set(found) == set(head)
    for key, iv in head.items():
        assert_interval(found[key], iv)
        assert f"| {iv['estimate']:.3f} | [{iv['ci_low']:.3f}, {iv['ci_high']:.3f}] | {iv['n_patients']} |" in card.text
    assert {e.metric_type: e.metric_value for e in card.data.eval_results} == {k: v["estimate"] for k, v in head.items()}
    split = committed("01_data")["results"]["exact"]["split_patients"]
    assert f"train {split['train']}, " in card.text and "seed 7" in card.text
    assert "Not measured yet" not in card.text and "**Not for clinical use**" in card.text
    assert "python -m cag_utils.run.pipeline --profile smoke --to 02" in card.text
    assert_private(card.text, tmp_path)
    assert not model_cards.write(folder, cnn_spec(folder, results))   # the same card: not written again


def test_cnn_card_of_a_checkpoint_no_record_names_says_what_is_missing(tmp_path):
    folder = checkpoint(tmp_path)
    results = results_dir(tmp_path, **{"02_cnn": committed("02_cnn")})   # names the committed run's checkpoint
    model_cards.write(folder, cnn_spec(folder, results))
    card = ModelCard.load(folder / model_cards.CARD)
    assert card.data.eval_results is None and metric_records(card) == {}
    assert "Not measured yet: test scores with 95 % patient intervals" in card.text
    assert "validation macro-F1 0.438" in card.text   # what training knew: config.json's best epoch


# --------------------------------------------------------------------------- committed stand-ins
def expected_standin_numbers(name: str) -> dict[str, float]:
    rec = json.loads((STANDINS / name / "standin.json").read_text())
    prov = json.loads((STANDINS / "provenance.json").read_text())
    out = {f"heldout_loss_{k}": rec["val"][i][1] for k, i in (("first", 0), ("last", -1))} if "val" in rec else {}
    if name in ("siglip", "conceptclip"):
        out |= {k: prov["probes_aux_heldout"][name][k]["estimate"] for k in ("laterality_accuracy", "severe_lesion_auroc")}
    for lang, checks in rec.get("heldout_checks", {}).items():
        out |= {f"{lang}.{k}": v for k, v in checks.items() if k != "n_frames"}
    return out


@pytest.mark.parametrize("name", PARTS)
def test_committed_standin_cards_state_their_records_and_stay_sealed(name, require):
    path = require(f"{FT['vlm_standins_dir']}/{name}/{model_cards.CARD}")
    card = ModelCard.load(path)
    found = metric_records(card)
    assert {k: r["value"] for k, r in found.items()} == expected_standin_numbers(name)
    if name in ("siglip", "conceptclip"):
        probes = json.loads((STANDINS / "provenance.json").read_text())["probes_aux_heldout"][name]
        for key in ("laterality_accuracy", "severe_lesion_auroc"):
            assert_interval(found[key], probes[key])
    assert (card.data.license, card.data.library_name) == ("mit", "transformers")
    assert "python -m cag_utils.vlm.make_standins --profile smoke" in card.text
    prov = json.loads((STANDINS / "provenance.json").read_text())
    assert path.read_text(encoding="utf-8") == model_cards.render(cards.standin_spec(path.parent, prov, "smoke")), \
        "the committed card is not what the code writes: python -m cag_utils.run.model_cards --profile smoke"
    if name == embedder_standin.NAME:   # embedder_standin.make writes it from the record alone
        assert path.read_text(encoding="utf-8") == model_cards.render(cards.standin_spec(path.parent, None, "smoke"))
    assert f"  {model_cards.CARD}\n" in (path.parent / SUMS_NAME).read_text() and check_folder(path.parent) == []
    assert_private(card.text)
    patients = set(prov["aux_cohort"]["patients"])
    assert not any(p in path.read_text(encoding="utf-8") for p in patients)


def test_the_card_is_not_part_of_the_digest_notebook_05_names_its_caches_by():
    recorded = json.loads((STANDINS / "provenance.json").read_text())["records"]
    assert {n: make_standins._record_digest(STANDINS / n) for n in make_standins.PARTS} == recorded


def test_assembled_vlm_carries_a_sealed_card_naming_its_stand_ins(tmp_path):
    from cag_utils.vlm import stage

    cfg = {**FT, "vlm_families": ["conceptclip_gemma3"]}
    folder = stage.assemble_families(cfg, tmp_path / "vlm", stage.load_standins(cfg, set()))["conceptclip_gemma3"]
    card = ModelCard.load(folder / model_cards.CARD)
    parts = [f"{FT['vlm_standins_dir']}/lm", f"{FT['vlm_standins_dir']}/conceptclip"]
    assert card.data.base_model == parts and metric_records(card) == {}
    assert "None: this folder is not scored on its own" in card.text
    assert f"  {model_cards.CARD}\n" in (folder / SUMS_NAME).read_text() and check_folder(folder) == []


# --------------------------------------------------------------------------- LoRA adapters
def adapter(root: Path, name: str) -> Path:
    folder = root / "data" / "work" / "smoke" / "vlm" / "adapters" / name
    folder.mkdir(parents=True)
    (folder / "training.json").write_text(json.dumps({"steps": 120, "train_loss": 0.5,
                                                      "parameters": {"trainable": 10, "total": 100}}))
    base = root / "data" / "work" / "smoke" / "vlm" / "gemma3-siglip-abc"
    (folder / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
                                                            "base_model_name_or_path": str(base)}))
    return folder


@pytest.mark.parametrize("tag", ["lora", "control"])
def test_adapter_card_carries_the_scores_of_notebooks_05_and_06(tmp_path, tag):
    folder = adapter(tmp_path, f"gemma3-{tag}-abc123def456")
    r05, r06 = committed("05_finetune"), committed("06_evaluation")
    r05["results"]["adapters"]["gemma3" if tag == "lora" else "control.gemma3"] = folder.name
    results = results_dir(tmp_path, **{"05_finetune": r05, "06_evaluation": r06})
    model_cards.write(folder, cards.adapter_spec(folder, results, "smoke"))
    card = ModelCard.load(folder / model_cards.CARD)

    assert (card.data.library_name, card.data.license) == ("peft", "mit")
    assert card.data.base_model == "data/work/smoke/vlm/gemma3-siglip-abc"   # the assembled stand-in VLM
    if tag == "lora":
        expected = {k: v for k, v in r05["results"]["headline"].items() if k.startswith("gemma3.")}
        expected |= {k: v for k, v in r06["results"]["headline"].items() if k.startswith("gemma3.with_lora.")}
    else:
        ctrl = r05["results"]["control"]
        expected = {k: v for k, v in ctrl["headline"].items() if k.startswith("gemma3.")}
        expected |= {k: v for k, v in ctrl["scores"]["gemma3"].items() if k != "image_reliance"}
    found = metric_records(card)
    assert set(found) == set(expected) and len(found) > 4
    for key, v in expected.items():
        if isinstance(v, dict):
            assert_interval(found[key], v)
        else:   # a chance rate: no interval
            assert found[key]["value"] == v and "ci_low" not in found[key]
    assert "Not measured yet" not in card.text
    assert_private(card.text, tmp_path)


def test_adapter_card_says_which_scores_are_missing(tmp_path):
    folder = adapter(tmp_path, "gemma3-lora-abc123def456")
    model_cards.write(folder, cards.adapter_spec(folder, None, "smoke"))   # at save time: no results read
    assert "Not measured yet: held-out losses" in ModelCard.load(folder / model_cards.CARD).text
    r05, r06 = committed("05_finetune"), committed("06_evaluation")
    r05["results"]["adapters"]["gemma3"] = folder.name
    r06["provenance"]["timing"]["finished_at"] = "0000"   # notebook 06 ran before this notebook 05
    model_cards.write(folder, cards.adapter_spec(folder, results_dir(tmp_path, **{"05_finetune": r05,
                                                                                   "06_evaluation": r06}), "smoke"))
    card = ModelCard.load(folder / model_cards.CARD)
    assert set(metric_records(card)) == {k for k in r05["results"]["headline"] if k.startswith("gemma3.")}
    assert "Not measured yet: VLScore, BLEU, chrF and lesion F1 of its outputs: results/06_evaluation.json " \
           "predates this notebook 05 run" in card.text


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_save_adapter_replaces_peft_s_card_and_seals_it(tmp_path):
    from peft import LoraConfig, get_peft_model

    folder = tmp_path / "data" / "work" / "smoke" / "vlm" / "adapters" / "gemma3-lora-abc123def456"
    model = get_peft_model(Tiny(), LoraConfig(r=2, lora_alpha=4, target_modules=["lin"]))
    lora.save_adapter(model, folder, {"steps": 3, "train_loss": 1.25, "parameters": lora.parameter_counts(model)})
    card = ModelCard.load(folder / model_cards.CARD)
    assert card.data.library_name == "peft" and "[More Information Needed]" not in card.text
    assert "3 steps, final training loss 1.25" in card.text and "Not measured yet: held-out losses" in card.text
    assert f"  {model_cards.CARD}\n" in (folder / SUMS_NAME).read_text() and check_folder(folder) == []


# --------------------------------------------------------------------------- refresh after the notebooks
def test_refresh_reseals_an_intact_folder_and_leaves_a_damaged_one(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CAG_OUTPUT_ROOT", str(tmp_path))
    intact, damaged = adapter(tmp_path, "gemma3-lora-aaaaaaaaaaaa"), adapter(tmp_path, "gemma3-lora-bbbbbbbbbbbb")
    ckpt = checkpoint(tmp_path)
    for folder in (intact, damaged):
        model_cards.write(folder, cards.adapter_spec(folder, None, "smoke"))
        seal_folder(folder)
    (damaged / "training.json").write_text("{}")   # altered after sealing
    r05 = committed("05_finetune")
    r05["results"]["adapters"]["gemma3"] = intact.name
    results_dir(tmp_path, **{"05_finetune": r05})
    with caplog.at_level(logging.WARNING, logger="cag_utils.run.model_cards"):
        changed = model_cards.refresh("smoke", standins=tmp_path / "no-standins")
    assert changed == [ckpt, intact]
    assert check_folder(intact) == [] and "held-out summary loss w/ LoRA" in (intact / model_cards.CARD).read_text()
    assert "Not measured yet: held-out losses" in (damaged / model_cards.CARD).read_text()
    assert any("gemma3-lora-bbbbbbbbbbbb not given a card" in m for m in caplog.messages)
    assert model_cards.refresh("smoke", standins=tmp_path / "no-standins") == []
