"""Throughput of the stage-3 models on this machine: LoRA training and greedy generation tokens/s.

Uses the smoke VLMs that notebook 05 assembles from the committed stand-ins (``stage.assemble_families``,
read with ``from_pretrained`` like the notebook) and a few corpus records; trains a fresh LoRA adapter
for ``--steps`` optimizer steps through the same Trainer code, then generates for ``--generate``
test examples. Tokens/s counts every input token of a training step (image, prompt, summary) and the
new tokens of generation. Writes no adapter anywhere that notebooks read.

    python benchmarks/bench_vlm.py --out results/bench_vlm.json   # ~1 min on 2 idle cores
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from cag_utils.run.config import load_config, work_dir  # noqa: E402
from cag_utils.run.seed import seed_everything  # noqa: E402
from cag_utils.vlm import build, data, generate, lora, stage  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("results/bench_vlm.json"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--generate", type=int, default=32)
    args = ap.parse_args(argv)
    cfg = load_config("smoke", "finetune")
    seed_everything(cfg["seed"], threads=cfg["torch_threads"])
    root = work_dir("smoke") / "vlm"
    records = stage.corpus_records(work_dir("smoke") / "corpus")
    examples, _ = data.make_examples(records, work_dir("smoke") / "corpus", data.languages(cfg["vlm_languages"]),
                                     stage.templates(cfg))
    train = [e for e in examples if e.split == "train"][: args.steps * cfg["vlm_batch_size"]]
    test = [e for e in examples if e.split == "test"][: args.generate]
    out = {"machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
           "steps": args.steps, "batch_size": cfg["vlm_batch_size"], "models": {}}
    # the assembled models of notebook 05 (cached under data/work; assembled here from the committed stand-ins if not)
    sources = stage.assemble_families(cfg, root, stage.load_standins(cfg, set()))
    for name in cfg["vlm_families"]:
        fam = build.family(name)
        model, processor = build.load_vlm(str(sources[name]))
        enc = data.encode_examples(fam.architecture, processor, train, cfg["vlm_max_length"], text_only=fam.text_only)[0]
        prompts = data.encode_examples(fam.architecture, processor, test, cfg["vlm_max_length"], with_target=False,
                                       text_only=fam.text_only)[0]
        peft_model = lora.lora_model(model, cfg["vlm_lora_r"], cfg["vlm_lora_alpha"], cfg["vlm_lora_dropout"],
                                     cfg["vlm_lora_targets"])
        p = {**stage.train_params(cfg), "max_steps": args.steps, "epochs": 1, "eval_points": 0}
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            rec = lora.train(peft_model, enc, [], data.Collator(processor.tokenizer.pad_token_id), p, Path(tmp), cfg["seed"])
            train_s = time.perf_counter() - t0
        tokens = sum(len(e["input_ids"]) for e in enc[: rec["steps"] * cfg["vlm_batch_size"]])
        _, gen = generate.generate(peft_model, processor, prompts, data.Collator(processor.tokenizer.pad_token_id, left=True),
                                   cfg["vlm_gen_batch_size"], cfg["vlm_max_new_tokens"])
        out["models"][name] = {"train_tokens_per_s": tokens / train_s, "train_s_per_step": train_s / rec["steps"],
                               "generate_tokens_per_s": gen["tokens"] / gen["seconds"], "generate_examples": len(prompts),
                               "trainable_parameters": lora.parameter_counts(peft_model)["trainable"]}
        print(name, json.dumps(out["models"][name]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
