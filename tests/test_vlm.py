"""Stage 3 (cag_utils.vlm): tokenizer, bad-input rules, encoding, LoRA checks, checkpoint errors, and a tiny
end-to-end run (stand-ins -> save_pretrained -> from_pretrained -> LoRA via Trainer -> generation). Tiny sizes:
the whole file takes well under a minute on 2 cores."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cag_utils.run.config import load_config, load_profile
from cag_utils.vlm import build, data, generate, lora, stage, standins, tokenizer

LOOP = {"max_steps": 3, "warmup_steps": 1, "eval_every": 2, "patience": 5, "min_delta": 0.01, "weight_decay": 0.01}
TINY_VISION = {"hidden": 32, "layers": 1, "heads": 2, "image_size": 32, "patch_size": 8, "caption_length": 40,
               "batch_size": 8, "lr": 1e-3, **LOOP}
TINY_LM = {"hidden": 32, "layers": 1, "heads": 2, "max_length": 200, "batch_size": 4, "pack_length": 32, "lr": 1e-3,
           **LOOP}
TEMPLATES = {"ja": "レポート:\n{pre_procedure_report}\n要約:", "en": "Report:\n{pre_procedure_report}\nSummary:"}


@pytest.fixture(scope="module")
def tok():
    return tokenizer.train_tokenizer(tokenizer.corpus_texts(tokenizer.draw_reports(150, 1)), 600)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A 6-record image folder like notebook 04's (two patients per split)."""
    root = tmp_path_factory.mktemp("corpus")
    reps = tokenizer.draw_reports(6, 99)
    rows = []
    for i, r in enumerate(reps):
        split = ("train", "train", "val", "val", "test", "test")[i]
        uid = f"EX-{i:04d}-R01-F001"
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 48), dtype=np.uint8)).save(
            root / split / "images" / f"{uid}.png")
        rows.append({"file_name": f"images/{uid}.png", "frame_uid": uid, "patient_id": f"PT-{i // 2}", "split": split,
                     "laterality_pred": "LCA", **{k: v for k, v in r.items() if k.endswith(("_ja", "_en"))}})
    return root, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def parts(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("vlm")
    pali = tokenizer.family_tokenizer(tok, "paligemma")
    build.make_processor("paligemma", pali, standins.image_processor(TINY_VISION), 1)
    texts = tokenizer.corpus_texts(tokenizer.draw_reports(20, 2), TEMPLATES)
    lm = standins.cached(root / "lm", lambda f: standins.pretrain_lm(f, tok, len(pali), texts[:60], texts[60:], TINY_LM, 0))
    frames = np.random.default_rng(0).integers(0, 255, (16, 48, 48), dtype=np.uint8)
    caps = [f"left coronary angiogram, stenosis #{i % 5 + 1} 90%" for i in range(16)]
    sig = standins.cached(root / "sig", lambda f: standins.train_siglip(f, tok, frames[:8], caps[:8], frames[8:],
                                                                          caps[8:], TINY_VISION, 0))
    return {"root": root, "lm": root / "lm", "sig": root / "sig", "records": {"lm": lm, "sig": sig}}


# ------------------------------------------------------------------ tokenizer and stand-in caching
def test_tokenizer_round_trip_and_family_ids(tok):
    text = "Plan: PCI to #6.\nRCA: #1 90% stenosis"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    g3, pg = tokenizer.family_tokenizer(tok, "gemma3"), tokenizer.family_tokenizer(tok, "paligemma")
    assert g3(text)["input_ids"] == pg(text)["input_ids"] == tok(text)["input_ids"]
    assert g3.boi_token == "<start_of_image>" and g3.image_token_id != tok.unk_token_id
    assert not hasattr(pg, "image_token")   # else PaliGemma's processor would take Gemma3's image token


def test_prompt_answer_pairs_are_tokenized_part_by_part(tok):
    pair = ("Diagnosis and treatment plan:\n", "Right-dominant circulation.")
    ids = standins.encode_texts(tok, [pair, "".join(pair)], 500)
    parts = [i for p in pair for i in tok(p, add_special_tokens=False)["input_ids"]]
    assert ids[0] == [tok.bos_token_id, *parts, tok.eos_token_id]
    texts = tokenizer.corpus_texts(tokenizer.draw_reports(1, 3), TEMPLATES)
    assert sum(isinstance(t, tuple) for t in texts) == 2 and all(isinstance(t, str) for t in tokenizer.plain(texts))


def test_text_corpus_uses_own_seeds():
    assert tokenizer.draw_reports(3, 5) == tokenizer.draw_reports(3, 5)
    assert tokenizer.draw_reports(3, 5) != tokenizer.draw_reports(3, 6)


def test_standin_dir_hash_and_cache(tmp_path):
    a = standins.standin_dir(tmp_path, "lm", {"x": 1}, np.zeros(3))
    assert a == standins.standin_dir(tmp_path, "lm", {"x": 1}, np.zeros(3))
    assert a != standins.standin_dir(tmp_path, "lm", {"x": 2}, np.zeros(3))
    assert a != standins.standin_dir(tmp_path, "lm", {"x": 1}, np.ones(3))
    calls = []
    build_fn = lambda f: calls.append(f) or {"kind": "x"}  # noqa: E731
    assert standins.cached(a, build_fn)["cached"] is False
    assert standins.cached(a, build_fn)["cached"] is True and len(calls) == 1


def test_caption_frames_drop_corpus_patients():
    table = pd.DataFrame({"frame_uid": ["a", "b", "c"], "patient_id": ["P1", "P2", "P3"], "run_id": ["r1", "r2", "r3"],
                          "exam_id": ["e1", "e2", "e3"], "laterality": ["LCA", "RCA", "LCA"],
                          "key_frame_category": ["better", "bad", "others"]})
    runs = pd.DataFrame({"run_id": ["r1", "r2", "r3"], "primary_angle": [30.0, -30.0, 0.0],
                         "secondary_angle": [20.0, -20.0, 0.0]})
    reports = pd.DataFrame({"exam_id": ["e1", "e2", "e3"], "lesions": ["#6 90%; #1 75%", "#1 75%", ""]})
    frames = np.arange(3 * 4, dtype=np.uint8).reshape(3, 2, 2)
    kept_frames, kept = standins.annotation_frames(frames, table, runs, reports, {"P2"})
    assert kept["patient_id"].tolist() == ["P1", "P3"] and (kept_frames[1] == frames[2]).all()
    assert standins.concept_caption(kept.iloc[0]) == "left coronary angiogram, LAO cranial view, stenosis #6 90%"
    assert standins.generic_caption(kept.iloc[0]) == "left coronary angiogram, LAO cranial view"
    assert "without contrast" in standins.concept_caption(kept.iloc[1])


# ------------------------------------------------------------------ bad input and prompts
def test_unknown_prompt_field_fails_before_anything(corpus):
    root, rec = corpus
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['history'\]"):
        data.make_examples(rec, root, ("en",), {"en": "{pre_procedure_report} {history}"})
    cfg = load_config("smoke", "finetune", {"vlm_prompt_en": "Report {report}"})
    with pytest.raises(ValueError, match="report"):
        stage.check_before_training(cfg)
    cfg = load_config("smoke", "finetune", {"vlm_control_train_frames": "aux"})   # before any LoRA step
    with pytest.raises(ValueError, match=r"vlm_control_train_frames must be one of \['corpus', 'annotation'\]"):
        stage.check_before_training(cfg)
    stage.check_before_training({**cfg, "vlm_control": False})   # no control: the key is not read


def test_missing_image_and_empty_text_are_skipped_by_id(corpus, tmp_path):
    root, rec = corpus
    rec = rec.copy()
    rec.loc[0, "file_name"] = "images/gone.png"
    rec.loc[1, "treatment_summary_en"] = "  "
    examples, skipped = data.make_examples(rec, root, ("ja", "en"), TEMPLATES)
    assert len(examples) == 2 * len(rec) - 3
    reasons = dict(zip(zip(skipped["record_id"], skipped["language"]), skipped["reason"]))
    assert reasons[(rec.loc[0, "frame_uid"], "ja")] == "missing image"
    assert reasons[(rec.loc[1, "frame_uid"], "en")] == "empty summary"


# ------------------------------------------------------------------ checkpoints and LoRA checks
def test_missing_checkpoint_fails_at_once_naming_what_and_where(tmp_path):
    cfg = load_config("paper", "finetune")
    assert cfg["vlm_use_standins"] is False and cfg["vlm_allow_download"] is False
    with pytest.raises(build.CheckpointMissing, match="vlm_paligemma_path"):
        stage.check_checkpoints({**cfg, "vlm_paligemma_path": ""})
    with pytest.raises(build.CheckpointMissing, match="neither a local folder nor in the local Hugging Face cache"):
        build.load_vlm(str(tmp_path / "no-such-model"), key="vlm_gemma3_path")
    with pytest.raises(build.CheckpointMissing, match="not/a-cached-model"):
        build.load_vlm("not/a-cached-model", key="vlm_gemma3_path")
    ok = {**cfg, "vlm_families": ["conceptclip_gemma3"], "vlm_gemma3_path": str(tmp_path), "vlm_conceptclip_path": ""}
    with pytest.raises(build.CheckpointMissing, match="vlm_conceptclip_path"):
        stage.check_checkpoints(ok)


def test_profiles_share_finetune_keys():
    smoke, paper = load_profile("smoke")["finetune"], load_profile("paper")["finetune"]
    assert set(smoke) == set(paper) and all(k.startswith("vlm_") for k in smoke)


# ------------------------------------------------------------------ tiny end to end, both architectures
@pytest.mark.parametrize("name", ["paligemma", "gemma3"])
def test_assemble_save_load_train_generate(name, parts, corpus, tmp_path):
    root, rec = corpus
    arch = build.family(name).architecture
    model, processor = build.assemble(name, parts["lm"], parts["sig"], image_tokens=4)
    model.save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    model, processor = build.load_vlm(str(tmp_path / "vlm"))
    assert type(model).__name__ == ("PaliGemmaForConditionalGeneration" if arch == "paligemma"
                                    else "Gemma3ForConditionalGeneration")
    examples, _ = data.make_examples(rec, root, ("ja", "en"), TEMPLATES)
    enc, kept, skipped = data.encode_examples(arch, processor, examples, max_length=400)
    assert len(enc) == len(examples) and skipped.empty
    # labels: -100 outside the target; the target is the summary + <eos>
    e, ex = enc[1], kept[1]
    target = e["labels"][e["labels"] != -100]
    assert processor.tokenizer.decode(target[:-1]) == ex.reference and int(target[-1]) == processor.tokenizer.eos_token_id
    if arch == "gemma3":   # token_type_ids mark the image tokens
        assert int(e["token_type_ids"].sum()) == 4
        assert (e["input_ids"][e["token_type_ids"] == 1] == processor.tokenizer.image_token_id).all()
    # over-long: skipped with the ID and the length, not truncated
    short = min(len(x["input_ids"]) for x in enc)
    _, kept2, sk = data.encode_examples(arch, processor, examples, max_length=short)
    assert len(sk) == len(examples) - len(kept2) > 0 and sk["reason"].str.contains("longer than the context").all()
    # a LoRA pattern that matches nothing fails before training, naming the pattern
    with pytest.raises(ValueError, match=r"nothing_here"):
        lora.lora_model(model, 4, 8, 0.0, r".*nothing_here")
    peft_model = lora.lora_model(model, 4, 8, 0.0)
    counts = lora.parameter_counts(peft_model)
    assert 0 < counts["trainable"] < counts["total"]
    assert not any(p.requires_grad for n, p in peft_model.named_parameters() if "vision_tower" in n)
    col = data.Collator(processor.tokenizer.pad_token_id)
    p = {"batch_size": 2, "epochs": 1, "max_steps": 2, "lr": 1e-3, "warmup_ratio": 0.0, "weight_decay": 0.0,
         "max_grad_norm": 1.0, "eval_points": 1, "device": "cpu"}
    record = lora.train(peft_model, enc[:4], enc[4:6], col, p, tmp_path, seed=0)
    assert record["steps"] == 2 and any("eval_loss" in h for h in record["history"])
    lora.save_adapter(peft_model, tmp_path / "adapter", {**record, "parameters": counts})
    before = generate.example_losses(peft_model, enc[:2], col, 2)
    base, _ = build.load_vlm(str(tmp_path / "vlm"))
    reloaded, rec2 = lora.load_adapter(base, tmp_path / "adapter")
    assert np.allclose(generate.example_losses(reloaded, enc[:2], col, 2), before, atol=1e-5)
    prompts = data.encode_examples(arch, processor, kept[:3], 10**6, with_target=False)[0]
    gen_col = data.Collator(processor.tokenizer.pad_token_id, left=True)
    batch = gen_col(prompts)
    assert (batch["attention_mask"][:, -1] == 1).all()   # left padding
    texts, timing = generate.generate(reloaded, processor, prompts, gen_col, 3, 5)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    beams = generate.generate(reloaded, processor, prompts, gen_col, 3, 5, num_beams=3)[0]   # beam search, batched
    assert len(beams) == 3 and beams == generate.generate(reloaded, processor, prompts, gen_col, 2, 5, num_beams=3)[0]
    blank = data.encode_examples(arch, processor, kept[:2], 10**6, blank_value=128)[0]
    assert (blank[0]["pixel_values"] == blank[0]["pixel_values"].flatten()[0]).all()


def test_load_best_keeps_the_weights_of_the_lowest_validation_loss(parts, corpus, tmp_path):
    """``load_best``: at lr 0.5 the validation loss is lowest at step 9 of 12; the kept weights are those of that
    evaluation (their validation loss is the recorded minimum, not the last one), and the checkpoints are gone."""
    root, rec = corpus
    model, processor = build.assemble("gemma3", parts["lm"], parts["sig"], image_tokens=4)
    examples, _ = data.make_examples(rec, root, ("ja", "en"), TEMPLATES)
    enc = data.encode_examples("gemma3", processor, examples, max_length=400)[0]
    col = data.Collator(processor.tokenizer.pad_token_id)
    torch.manual_seed(0)
    peft_model = lora.lora_model(model, 4, 8, 0.0)
    p = {"batch_size": 2, "epochs": 100, "max_steps": 12, "lr": 0.5, "warmup_ratio": 0.0, "weight_decay": 0.0,
         "max_grad_norm": 1.0, "eval_points": 4, "device": "cpu", "load_best": True}
    record = lora.train(peft_model, enc[:4], enc[4:5], col, p, tmp_path, seed=0)   # one: both losses are its mean
    evals = {h["step"]: h["eval_loss"] for h in record["history"] if "eval_loss" in h}
    assert sorted(evals) == [3, 6, 9, 12] and record["steps"] == 12
    assert record["best_step"] == min(evals, key=evals.get) < 12
    assert record["best_eval_loss"] == pytest.approx(min(evals.values())) and evals[12] - min(evals.values()) > 2e-4
    mean = lambda m: float(np.divide(*generate.example_losses(m, enc[4:5], col, 1).sum(0)))   # noqa: E731
    assert mean(peft_model) == pytest.approx(record["best_eval_loss"], abs=2e-5)
    assert not (tmp_path / "trainer").exists()


def test_the_adapter_name_changes_with_the_lora_seed_offset_and_not_without_it(corpus):
    root, rec = corpus
    examples, _ = data.make_examples(rec, root, ("ja", "en"), TEMPLATES)
    kept = {s: [e for e in examples if e.split == s] for s in ("train", "val")}
    cfg = load_config("smoke", "finetune")
    name = lambda c: stage.adapter_folder(c, "gemma3", root / "gemma3-abc", kept, root).name  # noqa: E731
    without = {k: v for k, v in cfg.items() if k != "vlm_lora_seed_offset"}
    assert name({**cfg, "vlm_lora_seed_offset": 0}) == name(without)   # committed adapters keep their names
    assert name({**cfg, "vlm_lora_seed_offset": 1}) != name(without)
    assert stage.lora_seed({**cfg, "vlm_lora_seed_offset": 1}) == cfg["seed"] + 1


def test_text_only_control_sees_no_image(parts, corpus):
    root, rec = corpus
    model, processor = build.assemble("gemma3", parts["lm"], parts["sig"], image_tokens=4)
    examples, _ = data.make_examples(rec, root, ("en",), TEMPLATES)
    enc = data.encode_examples("gemma3", processor, examples, 400, text_only=True)[0]
    blanked = data.encode_examples("gemma3", processor, examples, 400, text_only=True, blank_value=0)[0]
    tok = processor.tokenizer
    assert all("pixel_values" not in e and tok.image_token_id not in e["input_ids"].tolist() for e in enc)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(enc, blanked))
    target = enc[0]["labels"][enc[0]["labels"] != -100]
    assert tok.decode(target[:-1]) == examples[0].reference
    col = data.Collator(tok.pad_token_id)
    assert "pixel_values" not in col(enc[:2])
    assert generate.example_losses(model, enc[:2], col, 2).shape == (2, 2)   # runs without pixels
    with pytest.raises(ValueError, match="Gemma3"):
        data.encode("paligemma", processor, examples[0], True, text_only=True)
    assert build.family("gemma3_text").text_only and not build.family("gemma3").text_only


def test_train_loop_stops_at_the_plateau():
    w = torch.nn.Parameter(torch.tensor(1.0))
    model = torch.nn.Module()
    model.w = w
    vals = iter([1.0, 0.5, 0.499, 0.498, 0.497, 0.2])
    p = {"lr": 0.0, "weight_decay": 0.0, "max_steps": 100, "warmup_steps": 0, "eval_every": 10, "patience": 3,
         "min_delta": 0.01}
    rec = standins.train_loop(model, lambda step: w * 1.0, lambda: next(vals), p, 0)
    assert rec["stopped"] == "plateau" and rec["steps"] == 50 and [v[0] for v in rec["val"]] == [10, 20, 30, 40, 50]
    vals = iter([1.0, 0.5, 0.499, 0.498, 0.497, 0.2])
    rec = standins.train_loop(model, lambda step: w * 1.0, lambda: next(vals), {**p, "stop_after": 25}, 0)
    assert rec["steps"] == 25 and rec["stopped"] == "max_steps"
    vals = iter([1.0, 0.5, 0.499, 0.498, 0.497, 0.2])   # the plateau check fires at the cap: the cap stopped it
    rec = standins.train_loop(model, lambda step: w * 1.0, lambda: next(vals), {**p, "max_steps": 50}, 0)
    assert rec["steps"] == 50 and rec["stopped"] == "max_steps"


def test_sigmoid_loss_counts_equal_captions_as_positives():
    logits = torch.tensor([[5.0, 5.0, -5.0], [5.0, 5.0, -5.0], [-5.0, -5.0, 5.0]])
    same = standins.sigmoid_loss(logits, torch.tensor([0, 0, 1]))
    distinct = standins.sigmoid_loss(logits, torch.tensor([0, 1, 2]))
    assert same < 0.05 < 3.0 < distinct   # SigLIP's identity labels would punish the equal-caption pair


def test_packed_batches_cover_every_token_without_padding():
    enc = [[2, 5, 6, 1], [2, 7, 1], [2, 8, 9, 10, 1]]
    gen = standins.packed_batches(enc, 2, 3, np.random.default_rng(0))
    first = torch.cat([next(gen).flatten(), next(gen).flatten()])
    assert sorted(first.tolist()[:12]) == sorted(sum(enc, []))   # the first pass: each text once


def test_reliance_interval_is_blanked_minus_real():
    real = np.array([[10.0, 10], [20.0, 10], [30.0, 10], [12.0, 10]])
    blank = real + np.array([[5.0, 0], [5.0, 0], [5.0, 0], [5.0, 0]])
    stats = generate.reliance_stats(real, blank, ["a", "b", "c", "d"])
    iv = generate.reliance_intervals(stats, seed=0)
    assert iv["image_reliance"]["estimate"] == pytest.approx(0.5)
    assert iv["test_loss"]["estimate"] == pytest.approx(72 / 40) and iv["image_reliance"]["n_patients"] == 4


def test_pooled_patch_encoder_matches_gemma3_grid(parts):
    from transformers import SiglipVisionModel

    enc = SiglipVisionModel.from_pretrained(parts["sig"])
    wrapped = build.PooledPatchEncoder(enc, image_size=32, grid=2)
    out = wrapped(pixel_values=torch.zeros(2, 3, 64, 64)).last_hidden_state
    assert out.shape == (2, 4, 32) and not any(p.requires_grad for p in wrapped.parameters())
