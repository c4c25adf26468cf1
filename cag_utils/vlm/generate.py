"""Batched decoding, held-out losses, and the image-reliance measure.

Decoding: greedy (``num_beams`` 1) or beam search, deterministic either way; batches left-padded, ``max_new_tokens`` from the profile; the prompt is cut off the
output and special tokens are dropped. Held-out loss: the mean token cross-entropy on the summary
(labels), summed per example so that per-patient sums can be bootstrapped. Image reliance of a model:
held-out loss with every image replaced by a constant frame minus the loss with the real images
(positive when the model uses the image), with a bootstrap interval over test patients.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


@torch.no_grad()
def generate(model, processor, encoded: list[dict[str, torch.Tensor]], collator, batch_size: int,
             max_new_tokens: int, repetition_penalty: float = 1.0, num_beams: int = 1
             ) -> tuple[list[str], dict[str, float]]:
    """Outputs for prompt encodings (no target), and {tokens, seconds} for the throughput.
    ``repetition_penalty`` (profile key ``vlm_repetition_penalty``; 1.0 = none) and ``num_beams``
    (``vlm_num_beams``; 1 = greedy, more = beam search, the best beam kept) are passed to ``generate``."""
    model.eval()
    texts, n_new, t0 = [], 0, time.perf_counter()
    device = next(model.parameters()).device
    for batch in _batches(encoded, batch_size):
        inputs = {k: v.to(device) for k, v in collator(batch).items() if k != "labels"}
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             repetition_penalty=repetition_penalty, num_beams=num_beams,
                             pad_token_id=processor.tokenizer.pad_token_id, eos_token_id=processor.tokenizer.eos_token_id)
        new = out[:, inputs["input_ids"].shape[1]:]
        n_new += int((new != processor.tokenizer.pad_token_id).sum())
        texts += [t.strip() for t in processor.tokenizer.batch_decode(new, skip_special_tokens=True)]
    return texts, {"tokens": n_new, "seconds": time.perf_counter() - t0}


@torch.no_grad()
def example_losses(model, encoded: list[dict[str, torch.Tensor]], collator, batch_size: int) -> np.ndarray:
    """(n, 2): summed token cross-entropy on the target and the number of target tokens, per example."""
    model.eval()
    rows = []
    device = next(model.parameters()).device
    for batch in _batches(encoded, batch_size):
        inputs = {k: v.to(device) for k, v in collator(batch).items()}
        labels = inputs.pop("labels")
        logits = model(**inputs).logits[:, :-1].float()
        target = labels[:, 1:]
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")
        rows += [(float(c.sum()), int((t != -100).sum())) for c, t in zip(ce, target)]
    return np.asarray(rows, dtype=float).reshape(-1, 2)


def reliance_stats(real: np.ndarray, blank: np.ndarray, patients: list[str]) -> np.ndarray:
    """(n_patients, 3): per patient summed loss with real images, with blanked images, target tokens."""
    import pandas as pd   # here, not at the top: the GPU check imports ``generate`` without the data stack

    df = pd.DataFrame({"p": patients, "real": real[:, 0], "blank": blank[:, 0], "n": real[:, 1]})
    return df.groupby("p", sort=True)[["real", "blank", "n"]].sum().to_numpy()


def reliance_intervals(stats: np.ndarray, seed: int) -> dict[str, dict[str, Any]]:
    """Patient-bootstrap intervals of the real-image loss, the blanked-image loss, and blanked - real."""
    from cag_utils.intervals import patient_bootstrap, ratio_of_sums

    return {
        "test_loss": patient_bootstrap(stats[:, [0, 2]], ratio_of_sums, seed=seed),
        "test_loss_blanked": patient_bootstrap(stats[:, [1, 2]], ratio_of_sums, seed=seed),
        "image_reliance": patient_bootstrap(stats, lambda s: (s[..., 1] - s[..., 0]) / s[..., 2], seed=seed),
    }


__all__ = ["example_losses", "generate", "reliance_intervals", "reliance_stats"]
