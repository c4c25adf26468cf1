"""The committed stand-ins (models/standins/smoke): they are what `make standins` makes, and notebook 05 refuses
stale ones. Each part is retrained for its first steps from its inputs and must reproduce the committed loss log
exactly (the LM and tokenizer from the text generator; the SigLIP stand-ins from the frames of their first
batches, saved beside them, since regenerating the auxiliary cohort takes minutes)."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from transformers import AutoTokenizer

from cag_utils.run.config import REPO_ROOT, load_config
from cag_utils.vlm import build, make_standins, stage, standins, tokenizer

CFG = load_config("smoke", "finetune")
ROOT = REPO_ROOT / CFG["vlm_standins_dir"]
STEPS = make_standins.N_FIRST


def committed(name: str) -> dict:
    path = ROOT / name / standins.DONE
    assert path.is_file(), f"{path.relative_to(REPO_ROOT)} is missing: run `make standins` and commit models/standins"
    return json.loads(path.read_text())


def test_committed_standins_are_complete_clean_and_small():
    prov = json.loads((ROOT / "provenance.json").read_text())
    assert prov["settings"] == json.loads(json.dumps(make_standins.params(CFG)))
    assert prov["git_sha"] != "unknown" and not prov["git_sha"].endswith("-dirty")
    assert subprocess.run(["git", "cat-file", "-e", prov["git_sha"] + "^{commit}"], cwd=REPO_ROOT).returncode == 0
    size = sum(f.stat().st_size for f in ROOT.parent.rglob("*") if f.is_file())
    assert size < 60 * 2**20, f"committed stand-ins are {size / 2**20:.1f} MB (limit 60 MB)"
    for name in ("lm", "siglip", "conceptclip"):
        rec = committed(name)
        assert rec["stopped"] in ("plateau", "max_steps") and rec["steps"] == len(rec["losses"])
        assert (ROOT / name / "model.safetensors").is_file()
        val = np.asarray(rec["val"])[:, 1]   # the LM's next-token loss can halve; a contrastive loss has a high floor
        assert val[-1] < {"lm": 0.5, "siglip": 0.85, "conceptclip": 0.85}[name] * val[0], \
            f"{name}: held-out loss fell from {val[0]} to {val[-1]} only"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_lm_and_tokenizer_first_steps_match_the_committed_log(tmp_path):
    p = make_standins.params(CFG)
    train, val = make_standins.texts(p)
    tok = tokenizer.train_tokenizer(tokenizer.plain(train), p["text"]["vocab_size"])
    tok.save_pretrained(tmp_path / "tok")
    assert tokenizer.same_vocabulary(tmp_path / "tok", ROOT / "tokenizer")
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    pali = tokenizer.family_tokenizer(tok, "paligemma")
    build.make_processor("paligemma", pali, standins.image_processor(p["vision"]), 1)
    rec = standins.pretrain_lm(tmp_path / "lm", tok, len(pali), train, val, {**p["lm"], "stop_after": STEPS}, p["seed"])
    assert rec["losses"] == committed("lm")["losses"][:STEPS]


def test_the_encoders_text_tokenizer_is_trained_on_the_reports_alone(tmp_path):
    """SigLIP, ConceptCLIP and the VLScore embedder tokenize with ``encoder_tokenizer`` (no run logs), as a real
    SigLIP's tokenizer is not Gemma's; with ``vlm_standin_view_logs`` the LM's tokenizer differs from it."""
    p = make_standins.params(CFG)
    make_standins.encoder_tokenizer(p, tmp_path)
    for name in ("siglip", "conceptclip", "embedder"):
        assert tokenizer.same_vocabulary(tmp_path, ROOT / name), name
    assert tokenizer.same_vocabulary(tmp_path, ROOT / "tokenizer") is not bool(CFG.get("vlm_standin_view_logs"))


def test_only_lm_keeps_encoders_that_still_match(monkeypatch):
    """``--only lm`` refuses encoders whose settings changed (they would need ``make standins``)."""
    prov = make_standins.keep_encoders(CFG, ROOT)
    assert prov["records"]["siglip"] and prov["settings"]["vision"] == make_standins.params(CFG)["vision"]
    with pytest.raises(ValueError, match="settings.vision changed"):
        make_standins.keep_encoders({**CFG, "vlm_standin_patch_size": 8}, ROOT)
    with pytest.raises(ValueError, match="text-tower tokenizer differs"):
        make_standins.keep_encoders({**CFG, "vlm_standin_vocab_size": 3000}, ROOT)


@pytest.mark.parametrize("name", ["siglip", "conceptclip"])
def test_siglip_first_steps_match_the_committed_log(name, tmp_path):
    p = make_standins.params(CFG)
    first = np.load(ROOT / name / make_standins.FIRST_BATCHES)
    frames, caps = first["frames"], [str(c) for c in first["captions"]]
    bs = p["vision"]["batch_size"]
    assert len(caps) == STEPS * bs
    tok = AutoTokenizer.from_pretrained(ROOT / name)   # its text tower's own tokenizer (make_standins.encoder_tokenizer)
    order = [np.arange(k * bs, (k + 1) * bs) for k in range(STEPS)]
    rec = standins.train_siglip(tmp_path / name, tok, frames, caps, frames[:bs], caps[:bs],
                                {**make_standins.vision_params(p, name), "stop_after": STEPS}, p["seed"], order=order)
    assert rec["losses"] == committed(name)["losses"][:STEPS]
    caption = {"siglip": "view", "conceptclip": "stenosis"}[name]
    assert any(caption in c for c in caps)   # each stand-in's own caption kind


def test_notebook_05_refuses_stale_standins_and_shared_patients():
    with pytest.raises(stage.StandinsOutOfDate, match="vlm_standin_lm_lr|lm.lr"):
        stage.load_standins({**CFG, "vlm_standin_lm_lr": 0.123}, set())
    with pytest.raises(stage.StandinsOutOfDate, match="make standins"):
        stage.load_standins({**CFG, "vlm_standins_dir": "models/standins/none"}, set())
    patients = json.loads((ROOT / "provenance.json").read_text())["aux_cohort"]["patients"]
    with pytest.raises(ValueError, match="auxiliary cohort"):
        stage.load_standins(CFG, {patients[0]})
    parts = stage.load_standins(CFG, {"PT-not-there"})
    assert set(parts["folders"]) == set(make_standins.PARTS)


def test_the_pretrained_lm_answers_a_report_in_its_language_before_any_lora():
    """Greedy continuation of prompts of reports it never saw (another seed): a summary in the prompt's
    language, with a plan, as the prompt-shaped pretraining texts teach."""
    import torch
    from transformers import Gemma3ForCausalLM

    from cag_utils.evaluation.metrics.quality import has_plan, script_language

    tok = AutoTokenizer.from_pretrained(ROOT / "lm")
    model = Gemma3ForCausalLM.from_pretrained(ROOT / "lm").eval()
    for report in tokenizer.draw_reports(2, 987654):
        for lang in ("ja", "en"):
            prompt = CFG[f"vlm_prompt_{lang}"].format(pre_procedure_report=report[f"pre_procedure_report_{lang}"],
                                                      laterality_pred="") + "\n"
            ids = torch.tensor([[tok.bos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"]]])
            out = model.generate(ids, max_new_tokens=CFG["vlm_max_new_tokens"], do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            assert script_language(text) == lang and has_plan(text), (lang, text)


def test_make_replaces_the_parts_only_when_all_are_trained(tmp_path, monkeypatch):
    """make() trains into a staging folder: a run that fails leaves the committed parts as they were."""
    out = tmp_path / "smoke"
    for name in make_standins.PARTS:
        (out / name).mkdir(parents=True)
        (out / name / "old.txt").write_text("committed")

    def train(cfg, staging, progress, stop_after, kept=None, fail=False):
        for name in make_standins.PARTS:
            (staging / name).mkdir(parents=True)
            (staging / name / "new.txt").write_text("trained")
            assert (out / name / "old.txt").is_file()   # untouched while training
            if fail and name == make_standins.PARTS[1]:
                raise RuntimeError("interrupted")
        return {"records": {}}

    monkeypatch.setattr(make_standins.model_cards, "write", lambda folder, spec: None)
    monkeypatch.setattr(make_standins.cards, "standin_spec", lambda *a: None)
    monkeypatch.setattr(make_standins, "_train_parts", lambda *a: train(*a, fail=True))
    with pytest.raises(RuntimeError, match="interrupted"):
        make_standins.make(CFG, out, progress=False)
    assert all((out / n / "old.txt").is_file() and not (out / n / "new.txt").exists() for n in make_standins.PARTS)
    monkeypatch.setattr(make_standins, "_train_parts", train)
    assert make_standins.make(CFG, out, progress=False) == {"records": {}}
    assert all((out / n / "new.txt").is_file() and not (out / n / "old.txt").exists() for n in make_standins.PARTS)
    assert json.loads((out / "provenance.json").read_text()) == {"records": {}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke"]   # no staging folder left


def test_positive_control_targets_are_words_the_lm_knows():
    """The control's answers ('right coronary artery, RAO caudal') are whole words of the stand-in vocabulary,
    as in a real Gemma vocabulary: spelled letter by letter (the tokenizer before the run logs,
    ``vlm_standin_view_logs``), the view was not learnable (docs/stage3.md, positive control)."""
    from cag_utils.vlm import control

    tok = AutoTokenizer.from_pretrained(ROOT / "tokenizer")
    angles = {standins.view_name(p, s): (p, s) for p in (-30, 30) for s in (-25, 0, 25)}   # the six views
    assert len(angles) == 6
    for lat in ("LCA", "RCA"):
        for view, (primary, secondary) in angles.items():
            target = control.target(lat, primary, secondary)
            assert control.read_target(target) == (lat, view)
            for word in target.replace(",", "").split():
                assert len(tok.tokenize(word)) <= 2, f"{word!r} of {target!r} is split into {tok.tokenize(word)}"


def test_view_log_names_each_run_with_the_controls_words():
    """`vlm_standin_view_logs`: one exam's runs in the words of the control's answers, drawn reproducibly."""
    from cag_utils.vlm import control

    log = make_standins.view_log(np.random.default_rng([0, make_standins.VIEW_STREAM, 7]))
    assert log == make_standins.view_log(np.random.default_rng([0, make_standins.VIEW_STREAM, 7]))
    assert log.startswith("Runs: ") and log.endswith(".")
    runs = log[len("Runs: "):-1].split("; ")
    assert 6 <= len(runs) <= 9   # 4-6 left and 2-3 right coronary runs, as the cohort generator draws them
    assert {control.read_target(r)[0] for r in runs} == {"LCA", "RCA"} and all(all(control.read_target(r)) for r in runs)
