"""The smoke profile's VLScore embedder: a SigLIP stand-in that embeds whole summaries by their findings.

VLScore (``cag_utils.evaluation.metrics.vlscore``) needs one space where a frame, its reference summary and a
generated summary lie close when they say the same thing. The ConceptCLIP stand-in of notebook 05 is
not that space: its text tower learnt 20-token captions ("left coronary angiogram, LAO cranial view,
stenosis #6 90%") and reads a summary as something it never saw. This stand-in is trained for the
evaluation's task, the way a real report embedder is (the paper profile uses ConceptCLIP itself,
``eval_embedder_path``), and is a separate folder, so notebook 05's stand-ins and caches do not change:

- frames: the contrast frames of the stand-ins' auxiliary cohort (``make_standins.aux_frames``: own
  seed stream, patients disjoint from every cohort the notebooks use), split by patient;
- texts: the diagnostic/treatment summaries of those very exams in both languages, drawn again from
  the generator (``synth.cohort.draw_exams``, no frame rendered) in ``wordings`` template wordings per
  language (wording 0 is the exam's own), in the form VLScore embeds them (``metrics.text.normalise``)
  and with the sentence order shuffled (a summary means the same in any order);
- loss: SigLIP's pairwise sigmoid loss between frames and summaries plus the same loss between two
  summaries of one exam (another wording or language); every pair whose summaries state the same
  findings (``metrics.findings.parse_summary``: dominance, lesions, plan) is a positive. No text of
  ``metrics.perturb`` is used: the validity benchmark of notebook 06 stays a test the embedder never saw;
- text tower: ``vlm_standin_embedder_text_length`` tokens, longer than every summary and every greedy
  output (``vlm_max_new_tokens``), so that VLScore embeds each text whole.

``make_standins --only embedder`` writes ``<vlm_standins_dir>/embedder`` with its record
(``standin.json``: settings, losses, held-out curve and ranking checks, auxiliary patients);
``load_folder`` checks it against the profile before notebook 06 uses it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cag_utils.run import model_cards
from cag_utils.vlm import cards, sealed, standins

NAME = "embedder"
LANGUAGES = ("ja", "en")


class EmbedderOutOfDate(RuntimeError):
    """The committed embedder stand-in is missing or was made with other settings."""


def params(ft: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    """Every setting that changes the embedder: the SigLIP stand-ins' vision and loop settings (finetune-stage
    config ``ft``) with the evaluation stage's text length, patience and wordings (``ev``)."""
    from cag_utils.vlm import make_standins

    p = make_standins.params(ft)
    if ev["eval_embedder_text_length"] <= ft["vlm_max_new_tokens"]:
        raise ValueError(f"eval_embedder_text_length ({ev['eval_embedder_text_length']}) must exceed "
                         f"vlm_max_new_tokens ({ft['vlm_max_new_tokens']}): generated texts would be cut")
    return {"vision": {**p["vision"], "caption_length": int(ev["eval_embedder_text_length"]),
                       "patience": int(ev["eval_embedder_patience"])},   # its own schedule, not the stand-ins'
            "wordings": int(ev["eval_embedder_wordings"]), "aux": p["aux"], "seed": p["seed"]}


def configs(profile: str, overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(finetune, evaluation) configs of a profile; ``overrides`` (e.g. seed) apply to both."""
    from cag_utils.run.config import load_config

    o = overrides or {}
    return load_config(profile, "finetune", o), load_config(profile, "evaluation", o)


def _shuffled(text: str, rng: np.random.Generator) -> str:
    lines = [l for l in text.split("\n") if l.strip()]
    return "\n".join(lines[k] for k in rng.permutation(len(lines)))


def exam_summaries(draws: list, exam_ids: list[str], wordings: int, seed: int) -> pd.DataFrame:
    """One row per (exam, language, wording): exam_id, language, wording, text (normalised), findings key.

    Wording 0 is the exam's own summary; wording k > 0 renders the same facts with the generator's
    templates drawn from the seed ``[seed, exam index, k]``. Sentence order is shuffled in every wording."""
    from cag_utils.evaluation.metrics.findings import parse_summary
    from cag_utils.evaluation.metrics.text import normalise
    from cag_utils.synth.reports import make_reports

    rows = []
    for i, (draw, exam) in enumerate(zip(draws, exam_ids)):
        key = None
        for k in range(wordings):
            rng = np.random.default_rng([seed, i, k])
            reports = draw.reports if k == 0 else make_reports(draw.facts, rng)
            for lang in LANGUAGES:
                text = reports[f"treatment_summary_{lang}"]
                if key is None:   # what wording 0's English says: the group of every text of this exam
                    f = parse_summary(text)
                    key = json.dumps([f.dominance, f.lesions, f.plan])
                rows.append({"exam_id": exam, "language": lang, "wording": k, "key": key,
                             "text": normalise(_shuffled(text, rng))})
    return pd.DataFrame(rows)


def training_data(cfg: dict[str, Any], p: dict[str, Any], progress: bool = True
                  ) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """(contrast frames, their table, summaries of their exams) of the auxiliary cohort."""
    from cag_utils.cnn.pretrain import aux_cohort_settings
    from cag_utils.data.deid import Pseudonymizer, resolve_salt
    from cag_utils.run.config import load_config
    from cag_utils.synth.cohort import draw_exams
    from cag_utils.vlm import make_standins

    frames, table = make_standins.aux_frames(cfg, {"vision": p["vision"], "aux": p["aux"]}, progress)
    keep = table["has_contrast"].to_numpy()
    frames, table = frames[keep], table[keep].reset_index(drop=True)
    data_cfg = {**load_config(cfg["profile"], "data"), **{k: cfg[k] for k in ("seed", "num_workers")}}
    aux_cfg = aux_cohort_settings(data_cfg, p["aux"]["n_exams"], p["vision"]["image_size"], p["aux"]["stream"])
    draws = draw_exams(aux_cfg)
    pseudonym = Pseudonymizer(resolve_salt(aux_cfg))
    ids = [pseudonym.pseudonym(d.study_uid, "EX-") for d in draws]
    drawn = dict(zip(ids, ("; ".join(f"#{l.segment} {l.percent}%" for l in d.facts.lesions) for d in draws)))
    seen = table.groupby("exam_id")["lesions"].first()
    wrong = [e for e, l in seen.items() if drawn.get(e) != l]
    if wrong:   # the drawn exams must be the cohort's own: same pseudonym, same lesions
        raise RuntimeError(f"{len(wrong)} auxiliary exams do not match their drawn reports (e.g. {wrong[0]})")
    used = [i for i, e in enumerate(ids) if e in seen.index]
    texts = exam_summaries([draws[i] for i in used], [ids[i] for i in used], p["wordings"], p["seed"])
    return frames, table, texts


def text_ids(tokenizer, texts: list[str], length: int) -> torch.Tensor:
    """Ids padded to the tower's length, as ``SiglipEmbedder`` pads; a longer text is an error (VLScore would
    cut it)."""
    ids = tokenizer(texts, truncation=False)["input_ids"]
    longest = max(map(len, ids), default=0)
    if longest > length:
        raise ValueError(f"a text of {longest} tokens is longer than caption_length={length} tokens")
    return torch.tensor([i + [tokenizer.pad_token_id] * (length - len(i)) for i in ids])


class Pairs:
    """Batches of (frame, summary, second summary of the same exam) and their findings groups."""

    def __init__(self, table: pd.DataFrame, texts: pd.DataFrame, tokenizer, length: int):
        self.exam_of_frame = table["exam_id"].to_numpy()
        self.texts = texts.reset_index(drop=True)
        self.ids = text_ids(tokenizer, self.texts["text"].tolist(), length)
        keys = sorted(set(self.texts["key"]))
        self.group = torch.tensor([keys.index(k) for k in self.texts["key"]])
        self.rows_of = {e: g.index.to_numpy() for e, g in self.texts.groupby("exam_id")}

    def batch(self, frame_idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """(frame indices, text rows a, text rows b): a and b two different texts of the frame's exam."""
        a, b = [], []
        for f in frame_idx:
            rows = self.rows_of[self.exam_of_frame[f]]
            i, j = rng.choice(len(rows), 2, replace=False)
            a.append(rows[i]), b.append(rows[j])
        return frame_idx, torch.tensor(a), torch.tensor(b)


def _text_embeds(model, ids: torch.Tensor) -> torch.Tensor:
    out = model.get_text_features(input_ids=ids)
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(out, dim=-1)


def _image_embeds(model, px: torch.Tensor) -> torch.Tensor:
    out = model.get_image_features(pixel_values=px.expand(-1, 3, -1, -1))
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(out, dim=-1)


def pair_loss(model, px: torch.Tensor, ids_a: torch.Tensor, ids_b: torch.Tensor, groups: torch.Tensor
              ) -> torch.Tensor:
    """Multi-positive sigmoid loss frame-summary plus summary-summary (``standins.sigmoid_loss``, one
    learnt temperature and bias)."""
    img, ta, tb = _image_embeds(model, px), _text_embeds(model, ids_a), _text_embeds(model, ids_b)
    scale, bias = model.logit_scale.exp(), model.logit_bias
    return (standins.sigmoid_loss(ta @ img.T * scale + bias, groups)
            + standins.sigmoid_loss(ta @ tb.T * scale + bias, groups))


def ranking_checks(model, frames: np.ndarray, table: pd.DataFrame, texts: pd.DataFrame, tokenizer, length: int,
                   image_size: int, seed: int) -> dict[str, Any]:
    """On held-out exams, per frame and language: does VLScore put another wording of the exam's own summary
    (the reference is wording 0) above the summary of another exam with other findings? And does the text
    tower alone (cosine)? Shares over frames."""
    from cag_utils.evaluation.metrics.vlscore import vlscore_from_embeddings

    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    with torch.no_grad():
        emb = torch.cat([_text_embeds(model, text_ids(tokenizer, texts["text"].iloc[i:i + 64].tolist(), length))
                         for i in range(0, len(texts), 64)]).numpy()
        img = torch.cat([_image_embeds(model, standins.pixel_tensor(frames[i:i + 64], image_size))
                         for i in range(0, len(frames), 64)]).numpy()
    t = texts.reset_index(drop=True)
    for lang in LANGUAGES:
        wins_vl, wins_cos = [], []
        for f, exam in enumerate(table["exam_id"]):
            own = t[(t["exam_id"] == exam) & (t["language"] == lang)]
            ref, alt = own.index[own["wording"] == 0][0], own.index[own["wording"] == 1][0]
            pool = t[(t["language"] == lang) & (t["wording"] == 0) & (t["key"] != own["key"].iloc[0])].index
            other = int(rng.choice(pool))
            vl = vlscore_from_embeddings(img[[f, f]], emb[[ref, ref]], emb[[alt, other]])
            wins_vl.append(bool(vl[0] > vl[1]))
            wins_cos.append(bool(emb[ref] @ emb[alt] > emb[ref] @ emb[other]))
        out[lang] = {"vlscore_reworded_above_other_exam": float(np.mean(wins_vl)),
                     "cosine_reworded_above_other_exam": float(np.mean(wins_cos)), "n_frames": len(wins_vl)}
    return out


def train(folder: Path, tokenizer, frames: np.ndarray, table: pd.DataFrame, texts: pd.DataFrame, p: dict[str, Any],
          progress: bool = False, order=None) -> dict[str, Any]:
    """Train on the ``train`` patients, plateau and checks on the others; saved as a SiglipModel folder with its
    processor. ``order``: the first batches as frame-index arrays (a test replays them)."""
    from transformers import SiglipModel, SiglipProcessor

    v, seed = p["vision"], p["seed"]
    torch.manual_seed(seed)
    model = SiglipModel(standins.siglip_config(len(tokenizer), v))
    train_mask = (table["split"] == "train").to_numpy()
    val_mask = ~train_mask
    pixels = standins.pixel_tensor(frames, v["image_size"])
    tr = Pairs(table[train_mask].reset_index(drop=True),
               texts[texts["exam_id"].isin(table.loc[train_mask, "exam_id"])], tokenizer, v["caption_length"])
    va = Pairs(table[val_mask].reset_index(drop=True),
               texts[texts["exam_id"].isin(table.loc[val_mask, "exam_id"])], tokenizer, v["caption_length"])
    train_px, val_px = pixels[np.flatnonzero(train_mask)], pixels[np.flatnonzero(val_mask)]
    bs, rng = v["batch_size"], np.random.default_rng(seed)
    batches = iter(order) if order is not None else standins.siglip_batches(len(train_px), bs, seed)
    val_rng = np.random.default_rng(seed + 1)
    val_batches = [va.batch(idx, val_rng) for idx in np.array_split(val_rng.permutation(len(val_px)),
                                                                     len(val_px) // bs)[:20]]

    def loss_of(pairs: Pairs, px: torch.Tensor, batch) -> torch.Tensor:
        f, a, b = batch
        return pair_loss(model, px[torch.from_numpy(np.asarray(f))], pairs.ids[a], pairs.ids[b], pairs.group[a])

    def train_loss(step: int) -> torch.Tensor:
        return loss_of(tr, train_px, tr.batch(np.asarray(next(batches)), rng))

    def val_loss() -> float:
        return float(np.mean([float(loss_of(va, val_px, b)) for b in val_batches]))

    t0 = time.perf_counter()
    record = standins.train_loop(model, train_loss, val_loss, v, seed, NAME if progress else None)
    model.eval()
    checks = ranking_checks(model, frames[val_mask], table[val_mask].reset_index(drop=True), va.texts, tokenizer,
                            v["caption_length"], v["image_size"], seed)
    model.save_pretrained(folder)
    SiglipProcessor(image_processor=standins.image_processor(v), tokenizer=tokenizer).save_pretrained(folder)
    lengths = [int((row != tokenizer.pad_token_id).sum()) for row in torch.cat([tr.ids, va.ids])]
    return {"kind": "embedder", "settings": json.loads(json.dumps(p)), "n_train_frames": int(train_mask.sum()),
            "n_val_frames": int(val_mask.sum()), "n_texts": int(len(texts)),
            "n_findings_groups": int(texts["key"].nunique()), "longest_text_tokens": max(lengths),
            **record, "heldout_checks": checks, "parameters": sum(q.numel() for q in model.parameters()),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "patients": sorted(map(str, table["patient_id"].unique()))}


def make(ft: dict[str, Any], ev: dict[str, Any], root: Path, progress: bool = True) -> dict[str, Any]:
    """Train the embedder into ``root / embedder`` with the encoders' text tokenizer (``root / siglip``'s; the
    LM's in ``root / tokenizer`` also knows run logs, ``make_standins.encoder_tokenizer``)."""
    import shutil

    from transformers import AutoTokenizer

    from cag_utils.run.results import describe_device, git_sha, package_versions

    p, sha = params(ft, ev), git_sha()   # the code that trains: read before anything can change the tree
    tok = AutoTokenizer.from_pretrained(root / "siglip")
    frames, table, texts = training_data(ft, p, progress)
    folder = root / NAME
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    record = train(folder, tok, frames, table, texts, p, progress)
    record.update(git_sha=sha, versions=package_versions(), device=describe_device())
    (folder / standins.DONE).write_text(json.dumps(record, indent=1, ensure_ascii=False))
    model_cards.write(folder, cards.standin_spec(folder, None, ft["profile"]))   # README.md, from the record
    sealed.seal_folder(folder)   # after training and the card: reads the files only
    return record


def load_folder(ft: dict[str, Any], ev: dict[str, Any], other_patients: set[str]) -> Path:
    """The committed embedder of ``vlm_standins_dir`` after checking it: made with this profile's settings, and
    none of its patients in ``other_patients`` (the cohorts the notebooks use)."""
    from cag_utils.run.config import REPO_ROOT

    folder = REPO_ROOT / ft["vlm_standins_dir"] / NAME
    fix = f"run `python -m cag_utils.vlm.make_standins --profile {ft['profile']} --only embedder`"
    if not (folder / standins.DONE).is_file():
        raise EmbedderOutOfDate(f"no embedder stand-in in {ft['vlm_standins_dir']}: {fix}")
    sealed.require_intact(folder, sealed.standin_fix(ft["profile"], NAME))   # SHA256SUMS, else readable
    record = json.loads((folder / standins.DONE).read_text())
    wanted = json.loads(json.dumps(params(ft, ev)))
    if record["settings"] != wanted:
        diff = sorted(k for k in wanted if record["settings"].get(k) != wanted[k])
        raise EmbedderOutOfDate(f"the embedder stand-in was made with other settings ({', '.join(diff)}): {fix}")
    shared = set(record["patients"]) & set(map(str, other_patients))
    if shared:
        raise ValueError(f"{len(shared)} patient(s) of the embedder's auxiliary cohort are in the notebooks' cohorts")
    return folder
