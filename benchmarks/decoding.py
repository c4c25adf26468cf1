"""Which decoding? Greedy against beam search on the validation records, never the test ones (issue 22).

The w/ LoRA summaries of the smoke run list a lesion segment twice in 1-3 % of outputs ("#12 25%狭窄、#12 90%狭窄"):
greedy decoding commits to a digit of the segment number and cannot take it back. Beam search keeps the few most
probable continuations and can. This benchmark loads the adapters that notebook 05 trained (it does not train), decodes
the validation records of every model with ``num_beams`` 1, 2, 3, 4, and scores each output as notebook 06 does: a
repeated lesion segment or 4-gram, the prompt's language, a plan (``metrics.quality``), and lesion F1 against the
reference (``metrics.findings``). ``vlm.decoding.choose_num_beams`` then picks the setting for the profile from these
validation shares alone, so the test records that notebook 06 reports on play no part in the choice.
Writes ``results/decoding.json`` (with every validation output in ``results/decoding_outputs.csv``) and
``figures/decoding.png|pdf``. Needs notebooks 01-05 run on the profile (their cohort, corpus and adapters). Not
part of CI or ``make reproduce`` (about 4 minutes on 2 cores):

    python benchmarks/decoding.py                 # smoke profile, num_beams 1-4
    python benchmarks/decoding.py --beams 1 3
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install

from cag_utils.run.config import load_config, work_dir  # noqa: E402
from cag_utils.run.results import Run  # noqa: E402
from cag_utils.run.seed import seed_everything  # noqa: E402
from cag_utils.vlm import build, data, decoding, generate, lora, stage  # noqa: E402


def validation_outputs(cfg: dict, beams: list[int]) -> pd.DataFrame:
    """One row per (family, num_beams, validation example): the output and its reference."""
    from cag_utils.data.dataset import load_annotation

    corpus_dir = work_dir(cfg["profile"]) / "corpus"
    cache = work_dir(cfg["profile"]) / "vlm"
    records = stage.corpus_records(corpus_dir)
    examples, _ = data.make_examples(records, corpus_dir, data.languages(cfg["vlm_languages"]), stage.templates(cfg))
    by_split = {s: [e for e in examples if e.split == s] for s in ("train", "val")}
    other = set(records["patient_id"]) | set(load_annotation(cfg)[1]["patient_id"])
    sources = stage.assemble_families(cfg, cache, stage.load_standins(cfg, other))
    rows = []
    for name in cfg["vlm_families"]:
        fam = build.family(name)
        model, processor = build.load_family(name, cfg, sources[name])
        kept = {s: data.encode_examples(fam.architecture, processor, exs, cfg["vlm_max_length"],
                                        text_only=fam.text_only)[1] for s, exs in by_split.items()}
        folder = stage.adapter_folder(cfg, name, sources[name], kept, cache / "adapters")
        if not stage.reusable_adapter(folder):
            raise SystemExit(f"no adapter {folder.name}: run notebook 05 on profile {cfg['profile']} first")
        model, _ = lora.load_adapter(model, folder)
        prompts = data.encode_examples(fam.architecture, processor, kept["val"], 10**9, with_target=False,
                                       text_only=fam.text_only)[0]
        collator = data.Collator(processor.tokenizer.pad_token_id, left=True)
        for n in beams:
            t0 = time.perf_counter()
            texts, timing = generate.generate(model, processor, prompts, collator, cfg["vlm_gen_batch_size"],
                                              cfg["vlm_max_new_tokens"], cfg["vlm_repetition_penalty"], n)
            print(f"{fam.label:>22} num_beams {n}: {len(texts)} outputs in {time.perf_counter() - t0:.0f} s", flush=True)
            rows += [{"family": name, "model": fam.label, "num_beams": n, "record_id": e.record_id,
                      "patient_id": e.patient_id, "language": e.language, "reference": e.reference, "output": t,
                      "tokens_per_s": timing["tokens"] / max(timing["seconds"], 1e-9)}
                     for e, t in zip(kept["val"], texts)]
    return pd.DataFrame(rows)


def formatted(table: pd.DataFrame) -> list[dict]:
    """The table of docs/stage3.md (``tables.beams``): one row per model and beam count."""
    return [{"Model": r["model"], "num_beams": int(r["num_beams"]), "Outputs": int(r["n"]),
             "Repeats": f"{r['repeated_any']:.3f}", "In the prompt's language": f"{r['in_language']:.3f}",
             "With a plan": f"{r['has_plan']:.3f}",
             "Lesion F1": f"{r['lesion_f1']:.3f} [{r['lesion_f1_ci_low']:.3f}, {r['lesion_f1_ci_high']:.3f}]"}
            for _, r in table.iterrows()]


def plot(table: pd.DataFrame, target: float, chosen: int):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for (name, g), marker in zip(table.groupby("model", sort=False), "osD^v"):
        axes[0].plot(g["num_beams"], 100 * g["repeated_any"], marker=marker, label=name)
        axes[1].plot(g["num_beams"], g["lesion_f1"], marker=marker, label=name)
    axes[0].axhline(100 * target, color="k", ls="--", lw=0.8, label=f"target {100 * target:.0f} %")
    for ax in axes:
        ax.axvline(chosen, color="0.6", lw=4, alpha=0.3)
        ax.set_xlabel("num_beams (1 = greedy)")
        ax.set_xticks(sorted(table["num_beams"].unique()))
    axes[0].set_ylabel("w/ LoRA outputs with a repeat (%)")
    axes[1].set_ylabel("lesion F1 vs reference")
    axes[0].legend(fontsize=7)
    fig.suptitle("Decoding on the validation records (test records not used)", fontsize=10)
    fig.tight_layout()
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 2, 3, 4])
    args = ap.parse_args()
    cfg = load_config(args.profile, "finetune")
    seed_everything(cfg["seed"], threads=cfg["torch_threads"])
    run = Run("decoding", cfg)
    outputs = validation_outputs(cfg, args.beams)
    table = decoding.validation_table(outputs)
    chosen = decoding.choose_num_beams(table, decoding.LOOP_TARGET)
    print(table.to_string(index=False))
    print("chosen num_beams:", chosen)
    run.figure(plot(table, decoding.LOOP_TARGET, chosen), "", show=False,
               caption="Share of w/ LoRA validation outputs that repeat a lesion segment or a 4-gram (left) and their "
                       "lesion F1 against the reference (right), by beam count; the gray bar is the setting chosen.")
    run.caption("beams", "Decoding settings on the validation records, per model and beam count: shares of outputs that "
                "repeat a lesion segment or a 4-gram, that are in the prompt's language and that state a plan, and micro lesion "
                "F1 against the reference with its 95 % patient-bootstrap interval.")
    run.table(outputs, "outputs")
    path = run.save({"table": table.to_dict("records"), "chosen_num_beams": chosen, "loop_target": decoding.LOOP_TARGET,
                     "rule": decoding.RULE, "profile_num_beams": cfg["vlm_num_beams"],
                     "n_outputs_per_setting": int(len(outputs) // len(args.beams)),
                     "tables": {"beams": formatted(table)}})
    print("wrote", path)


if __name__ == "__main__":
    main()
