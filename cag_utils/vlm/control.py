"""Positive control of the image pathway: a short target that only the frame determines.

Each assembled VLM is also LoRA-tuned (same recipe, its own adapter) to answer ``vlm_control_prompt``
with the artery and the view of the key frame, e.g. ``left coronary artery, LAO cranial``. The prompt
holds no report, so nothing but the image can tell the answer. On the corpus test frames a model that
reads the image names the artery well above chance, falls to chance on the blanked frame, and its
image reliance (blanked minus real held-out loss) is clearly above 0. That shows the projector path
and the reliance measure can see image use, so that a null result on the summaries means something.

Training frames (``vlm_control_train_frames``): ``corpus``, the corpus training key frames (212 in the
smoke run), or ``annotation``, the annotation cohort's frames with contrast (about 3,150, no corpus
patient), the frames the encoders' linear probes are trained on. Validation and test are the corpus
key frames either way. With the first stand-ins the annotation frames did worse (docs/stage3.md): their
tokenizer spelled the view words letter by letter (before ``vlm_standin_view_logs``), and one pass over many
frames taught those letters less than many passes over few.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cag_utils.intervals import format_interval
from cag_utils.vlm.data import Example
from cag_utils.vlm.standins import ARTERY, view_name

_ARTERY = re.compile(r"\b(left|right) coronary artery\b", re.I)
_VIEW = re.compile(r"\b(LAO|RAO) (cranial|caudal|straight)\b", re.I)


def target(laterality: str, primary: float, secondary: float) -> str:
    """``left coronary artery, LAO cranial`` from the frame's laterality and C-arm angles."""
    return f"{ARTERY[laterality]} artery, {view_name(primary, secondary)}"


def read_target(text: str) -> tuple[str, str]:
    """(artery, view) named in an output, "" for what it does not name: ('LCA', 'LAO cranial')."""
    a, v = _ARTERY.search(text or ""), _VIEW.search(text or "")
    artery = {"left": "LCA", "right": "RCA"}[a.group(1).lower()] if a else ""
    return artery, f"{v.group(1).upper()} {v.group(2).lower()}" if v else ""


def control_examples(records: pd.DataFrame, corpus_dir: Path, runs: pd.DataFrame, prompt: str
                     ) -> dict[str, list[Example]]:
    """One English example per corpus record: the key frame, ``prompt``, the artery-and-view target.

    ``runs``: the independent cohort's runs (``run_id``, ``primary_angle``, ``secondary_angle``). The artery
    is the frame's true laterality (the CNN's where the truth is unknown, as in the corpus)."""
    r = records.merge(runs[["run_id", "primary_angle", "secondary_angle"]], on="run_id", how="left",
                      validate="many_to_one")
    out: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    for _, row in r.iterrows():
        lat = row["laterality_true"] if isinstance(row["laterality_true"], str) else row["laterality_pred"]
        out[row["split"]].append(Example(row["frame_uid"], row["patient_id"], row["split"], "en", prompt,
                                         target(lat, row["primary_angle"], row["secondary_angle"]),
                                         str(Path(corpus_dir) / row["split"] / row["file_name"])))
    return out


def annotation_examples(frames: np.ndarray, table: pd.DataFrame, folder: Path, prompt: str) -> list[Example]:
    """Training examples from annotation-cohort frames with contrast (labelled ``better`` or ``bad``).

    ``frames``/``table``: ``stage.caption_frames`` (corpus patients already dropped; columns ``frame_uid``,
    ``patient_id``, ``laterality``, ``key_frame_category``, ``primary_angle``, ``secondary_angle``). Each
    frame is written once as ``folder/<frame_uid>.png`` (the trainer reads images by path, as for the corpus)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keep = table["key_frame_category"].isin(["better", "bad"]).to_numpy()
    out = []
    for frame, (_, row) in zip(frames[keep], table[keep].iterrows()):
        path = folder / f"{row['frame_uid']}.png"
        Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(path)
        out.append(Example(row["frame_uid"], row["patient_id"], "train", "en", prompt,
                           target(row["laterality"], row["primary_angle"], row["secondary_angle"]), str(path)))
    return out


def control_scores(res: dict[str, Any], head: dict[str, Any], *, seed: int) -> dict[str, Any]:
    """Artery and view accuracy on real and blanked frames (patient intervals), chance level, image reliance."""
    from cag_utils.evaluation.metrics.findings import label_accuracy

    exs = res["examples"]["test"]
    patients = [e.patient_id for e in exs]
    truth = [read_target(e.reference) for e in exs]
    out: dict[str, Any] = {}
    for variant, key in (("with_lora", "real"), ("with_lora_blank_image", "blank")):
        pred = [read_target(t) for t in res["outputs"][variant]]
        for k, what in enumerate(("artery", "view")):
            out[f"{what}_accuracy_{key}"] = label_accuracy([t[k] for t in truth], [p[k] for p in pred], patients,
                                                            seed=seed)
    for k, what in enumerate(("artery", "view")):
        counts = pd.Series([t[k] for t in truth]).value_counts()
        out[f"{what}_chance"] = float(counts.iloc[0] / counts.sum())   # always naming the commonest answer
    out["image_reliance"] = head[f"{res['family']}.image_reliance"]
    return out


def control_table(scores: dict[str, dict[str, Any]], labels: dict[str, str]) -> pd.DataFrame:
    """One row per model: artery and view accuracy, real and blanked frame, chance, image reliance."""
    rows = []
    for name, s in scores.items():
        rows.append({"Model": labels[name], "Artery, real frame": format_interval(s["artery_accuracy_real"]),
                     "Artery, blanked": format_interval(s["artery_accuracy_blank"]),
                     "Artery, chance": f"{s['artery_chance']:.3f}",
                     "View, real frame": format_interval(s["view_accuracy_real"]),
                     "View, blanked": format_interval(s["view_accuracy_blank"]),
                     "View, chance": f"{s['view_chance']:.3f}", "Image reliance": format_interval(s["image_reliance"])})
    return pd.DataFrame(rows)


__all__ = ["annotation_examples", "control_examples", "control_scores", "control_table", "read_target", "target"]
