"""LoRA fine-tuning through peft and the Hugging Face Trainer.

The same code runs on one CPU, one GPU, or several GPUs under ``accelerate launch`` / ``torchrun``
(the Trainer handles the processes; nothing here is distributed by hand). Defaults (profile keys
``vlm_lora_*``): r 16, alpha 32, dropout 0.05, targets = every linear layer of the language model
(``DEFAULT_TARGETS``, a regex peft matches against full module names); the vision tower is frozen.
The multimodal projector is trained in full (``modules_to_save``): Gemma3's starts at zero, so with
LoRA on the language model only the image would contribute nothing. On GPU: bf16 and gradient
checkpointing. Adapters are written with ``save_pretrained``; ``merge`` writes a merged model too.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import torch

DEFAULT_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
PROJECTOR = "multi_modal_projector"


def matching_modules(model: torch.nn.Module, pattern: str) -> list[str]:
    """Names of the Linear layers whose full name matches ``pattern`` (peft's rule: re.fullmatch)."""
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and re.fullmatch(pattern, n)]


def lora_model(model: torch.nn.Module, r: int, alpha: int, dropout: float, targets: str = DEFAULT_TARGETS):
    """The model wrapped with a LoRA adapter (fails before training when ``targets`` matches nothing)."""
    from peft import LoraConfig, get_peft_model

    try:
        re.compile(targets)
    except re.error as exc:
        raise ValueError(f"LoRA target pattern {targets!r} is not a valid regex: {exc}") from None
    matched = matching_modules(model, targets)
    if not matched:
        raise ValueError(f"LoRA target pattern {targets!r} matches no Linear module of {type(model).__name__}")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        modules_to_save=[PROJECTOR], bias="none")
    return get_peft_model(model, config)


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": int(trainable), "total": int(sum(p.numel() for p in model.parameters()))}


def n_steps(n_examples: int, batch_size: int, epochs: int, max_steps: int) -> int:
    """Optimizer steps: ``epochs`` passes over the data, capped at ``max_steps`` (0 = no cap)."""
    steps = epochs * math.ceil(n_examples / batch_size)
    return min(steps, max_steps) if max_steps else steps


def train(model, train_set: list, eval_set: list, collator, p: dict[str, Any], out_dir: Path,
          seed: int, callbacks: list | None = None) -> dict[str, Any]:
    """Train with ``transformers.Trainer``; returns {"history", "steps", "train_loss"}.

    ``p``: batch_size, epochs, max_steps, lr, warmup_ratio, weight_decay, max_grad_norm, eval_points, device, and
    optionally load_best: keep the weights of the evaluation with the lowest validation loss, not the last
    (the Trainer's ``load_best_model_at_end``; its checkpoints are deleted afterwards; the record gets
    ``best_step`` and ``best_eval_loss``).
    ``callbacks``: extra ``TrainerCallback``s (the GPU check times steps with one); they do not change training.
    """
    from transformers import Trainer, TrainingArguments

    gpu = torch.cuda.is_available() and p.get("device", "auto") != "cpu"
    steps = n_steps(len(train_set), p["batch_size"], p["epochs"], p["max_steps"])
    eval_every = max(1, steps // max(1, p["eval_points"]))
    best = bool(p.get("load_best")) and bool(eval_set)
    args = TrainingArguments(
        output_dir=str(out_dir / "trainer"), max_steps=steps, per_device_train_batch_size=p["batch_size"],
        per_device_eval_batch_size=p["batch_size"], learning_rate=p["lr"], lr_scheduler_type="linear",
        warmup_steps=int(round(p["warmup_ratio"] * steps)), weight_decay=p["weight_decay"], max_grad_norm=p["max_grad_norm"],
        logging_steps=max(1, steps // 30), eval_strategy="steps" if eval_set else "no", eval_steps=eval_every,
        save_strategy="steps" if best else "no", save_steps=eval_every, save_total_limit=1 if best else None,
        load_best_model_at_end=best, metric_for_best_model="eval_loss", greater_is_better=False, report_to=[],
        seed=seed, data_seed=seed, use_cpu=not gpu, bf16=gpu,
        gradient_checkpointing=gpu, remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True,
        label_names=["labels"])
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set or None,
                      data_collator=collator, callbacks=callbacks)
    out = trainer.train()
    history = [{k: v for k, v in h.items() if k in ("step", "epoch", "loss", "eval_loss", "grad_norm")}
               for h in trainer.state.log_history if "loss" in h or "eval_loss" in h]
    record = {"history": history, "steps": int(trainer.state.global_step), "train_loss": float(out.training_loss),
              "train_runtime_s": float(out.metrics.get("train_runtime", float("nan")))}
    if best:
        record.update(best_step=int(trainer.state.best_global_step), best_eval_loss=float(trainer.state.best_metric))
        shutil.rmtree(out_dir / "trainer", ignore_errors=True)   # the checkpoints; the kept weights are in the model
    return record


def save_adapter(model, folder: Path, record: dict[str, Any], merge: bool = False) -> Path:
    """Adapter (and projector) with ``save_pretrained``; ``merge``: also ``folder/merged`` (full weights);
    a model card (``vlm.cards``) from the training record. Sealed last (``sealed.seal_folder``: SHA256SUMS of every file but the Trainer's scratch folder)."""
    from cag_utils.run import model_cards
    from cag_utils.run.cachecheck import SUMS_NAME
    from cag_utils.vlm import cards
    from cag_utils.vlm.sealed import seal_folder

    folder.mkdir(parents=True, exist_ok=True)
    (folder / SUMS_NAME).unlink(missing_ok=True)   # an adapter half rewritten never passes for whole
    model.save_pretrained(folder)
    if merge:
        model.merge_and_unload().save_pretrained(folder / "merged")
    (folder / "training.json").write_text(json.dumps(record, indent=1))
    # our card replaces peft's template; test scores come later (python -m cag_utils.run.model_cards)
    model_cards.write(folder, cards.adapter_spec(folder, None, model_cards.profile_of(folder)))
    seal_folder(folder, skip_dirs=("trainer",))
    return folder


def load_adapter(base, folder: Path):
    """``PeftModel.from_pretrained(base, folder)`` and the training record saved beside the adapter."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, folder).eval(), json.loads((folder / "training.json").read_text())
