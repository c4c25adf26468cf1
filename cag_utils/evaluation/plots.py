"""Figures of notebook 06: metric bars with intervals, metric validity, qualitative cases (both languages), rating
distributions.

Japanese text needs a CJK font: ``cjk_font`` finds Noto Sans CJK (Debian: ``fonts-noto-cjk``). Without it
the case figure shows the English texts only and says so, rather than drawing empty boxes.
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cag_utils.evaluation.evaluation import METRIC_LABELS, METRICS, VARIANT_LABELS, VARIANTS, cell_key

CJK_FONTS = ("Noto Sans CJK JP", "Noto Serif CJK JP", "IPAexGothic", "IPAGothic", "TakaoGothic")

__all__ = ["cjk_font", "plot_cases", "plot_metric_bars", "plot_ratings", "plot_validity"]


def cjk_font() -> str | None:
    """Name of an installed font that renders Japanese, or None. Fonts installed after matplotlib built its
    font cache are not in it, so the system's CJK font files are added when none is found."""
    from matplotlib import font_manager

    def known() -> str | None:
        names = {f.name for f in font_manager.fontManager.ttflist}
        return next((n for n in CJK_FONTS if n in names), None)

    if known() is None:
        for path in font_manager.findSystemFonts():
            if any(k in Path(path).name for k in ("CJK", "ipag", "ipaexg", "Takao")):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):   # an unreadable font file: skip it
                    continue
    return known()


def plot_metric_bars(headline: dict[str, Any], families: Sequence[str], labels: dict[str, str],
                     languages: Sequence[str]):
    """One panel per metric: bars per model and language, one colour per variant, 95 % intervals as error bars."""
    fig, grid = plt.subplots(2, 3, figsize=(10, 6.6))
    axes = grid.ravel()[:len(METRICS)]
    groups = [(f, lang) for f in families for lang in languages]
    width = 0.8 / len(VARIANTS)
    colours = plt.get_cmap("tab10").colors
    for ax, metric in zip(axes, METRICS):
        for k, variant in enumerate(VARIANTS):
            est, low, high = [], [], []
            for f, lang in groups:
                iv = headline[cell_key(f, variant, lang, metric)]
                e = iv["estimate"]
                lo = iv["ci_low"] if iv["ci_low"] is not None and np.isfinite(iv["ci_low"]) else e
                hi = iv["ci_high"] if iv["ci_high"] is not None and np.isfinite(iv["ci_high"]) else e
                est.append(e), low.append(e - lo), high.append(hi - e)
            x = np.arange(len(groups)) + (k - (len(VARIANTS) - 1) / 2) * width
            ax.bar(x, est, width, yerr=[low, high], capsize=1.5, color=colours[k], label=VARIANT_LABELS[variant],
                   error_kw={"elinewidth": 0.7})
        ax.set_xticks(np.arange(len(groups)), [f"{labels[f]}\n{lang}" for f, lang in groups], fontsize=6.5,
                      rotation=90)
        ax.set_title(METRIC_LABELS[metric], fontsize=9)
        if metric == "vlscore":   # near 1 for every model: the axis starts below the lowest interval, not at 0
            lows = [headline[cell_key(f, v, lang, metric)]["ci_low"] or 0 for f, lang in groups for v in VARIANTS]
            ax.set_ylim(max(0.0, np.floor(min(lows) * 50 - 1) / 50), 1)
        else:
            ax.set_ylim(0, 100 if metric in ("bleu", "chrf") else 1)
        ax.tick_params(axis="y", labelsize=7)
    spare = grid.ravel()[-1]            # the sixth panel holds the legend
    spare.axis("off")
    spare.legend(*axes[0].get_legend_handles_labels(), loc="center", fontsize=9, frameon=False, title="variant")
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int) -> str:
    lines = []
    for line in str(text).splitlines() or [""]:
        lines += textwrap.wrap(line, width) or [""]
    return "\n".join(lines)


def plot_cases(cases: pd.DataFrame, images: dict[str, Any], families: Sequence[str], labels: dict[str, str],
               languages: Sequence[str] = ("ja", "en"), variant: str = "with_lora", selected: str | None = None):
    """Per case (one or more): the key frame, then per language the reference and each model's ``variant`` output.

    ``cases``: prediction rows (record_id, family, variant, language, reference, output) of the chosen records.
    Each panel stacks its texts with matplotlib's offsetbox packer, and the figure is as tall as its texts.
    """
    from matplotlib.offsetbox import AnchoredOffsetbox, TextArea, VPacker

    font = cjk_font()
    shown = [lang for lang in languages if lang != "ja" or font]
    record_ids = list(dict.fromkeys(cases["record_id"]))
    panels = {}
    for rid in record_ids:
        for lang in shown:
            sub = cases[(cases["record_id"] == rid) & (cases["language"] == lang)]
            blocks = [("Reference", sub["reference"].iloc[0])]
            for f in families:
                out = sub[(sub["family"] == f) & (sub["variant"] == variant)]["output"]
                name = labels[f] + (" (selected)" if f == selected else "")
                blocks.append((f"{name}, {VARIANT_LABELS[variant]}", out.iloc[0] if len(out) else ""))
            panels[rid, lang] = [(t, _wrap(b, 30 if lang == "ja" else 58)) for t, b in blocks]
    lines = {rid: max(sum(2 + b.count("\n") for _, b in panels[rid, lang]) for lang in shown) for rid in record_ids}
    heights = [max(1.4, 0.118 * lines[rid] + 0.3) for rid in record_ids]
    fig = plt.figure(figsize=(2.9 * len(shown) + 1.3, sum(heights) + 0.4))   # about a page's width: text stays legible
    grid = fig.add_gridspec(len(record_ids), 1 + len(shown), width_ratios=[1.3] + [2.9] * len(shown),
                            height_ratios=heights, hspace=0.06, wspace=0.03)
    rc = {"font.family": [font, "DejaVu Sans"]} if font else {}
    with plt.rc_context(rc):
        for row, rid in enumerate(record_ids):
            ax = fig.add_subplot(grid[row, 0])
            ax.imshow(np.asarray(images[rid]), cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"case {row + 1}", fontsize=8)
            ax.axis("off")
            for col, lang in enumerate(shown, start=1):
                ax = fig.add_subplot(grid[row, col])
                ax.axis("off")
                children = []
                for title, body in panels[rid, lang]:
                    children += [TextArea(title, textprops={"fontsize": 6.5, "fontweight": "bold"}),
                                 TextArea(body, textprops={"fontsize": 6.2, "linespacing": 1.1})]
                box = VPacker(children=children, align="left", pad=0, sep=1.5)
                ax.add_artist(AnchoredOffsetbox(loc="upper left", child=box, frameon=False, borderpad=0, pad=0,
                                                bbox_to_anchor=(0, 1), bbox_transform=ax.transAxes))
                if row == 0:
                    ax.set_title({"ja": "Japanese", "en": "English"}.get(lang, lang), fontsize=9)
    if not font:
        fig.suptitle("No CJK font installed (fonts-noto-cjk): Japanese texts not drawn", fontsize=8)
    return fig


def plot_ratings(ratings: pd.DataFrame, labels: dict[str, str]):
    """Distribution of the 0-10 scores per rated model (strip + box), one colour per rater."""
    import seaborn as sns

    df = ratings.assign(model_label=[labels.get(m, m) for m in ratings["model"]])
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    order = sorted(df["model_label"].unique())
    sns.boxplot(df, x="model_label", y="score", order=order, color="0.9", ax=ax, fliersize=0)
    sns.stripplot(df, x="model_label", y="score", hue="rater", order=order, dodge=True, size=3, ax=ax)
    ax.set(xlabel="", ylabel="rating (0-10)", ylim=(-0.5, 10.5))
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig


def plot_validity(summary: dict[str, Any]):
    """One panel per metric: the mean score drop of each perturbation kind, as a share of the metric's range
    (BLEU and chrF / 100), with 95 % intervals; changed findings in red, rewordings in gray. A valid metric
    puts every red bar above every gray one."""
    from cag_utils.evaluation.metrics.perturb import KIND_LABELS
    from cag_utils.evaluation.metrics.validity import CONTROL, SCALE

    metrics = list(summary)
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.1 * len(metrics) + 1.6, 3.8), sharey=True)
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        drops = summary[metric]["drop"]
        kinds = [k for k in drops if k != "reference"]
        scale = SCALE[metric]
        est = np.array([drops[k]["estimate"] for k in kinds]) / scale
        low = np.array([drops[k]["ci_low"] for k in kinds]) / scale
        high = np.array([drops[k]["ci_high"] for k in kinds]) / scale
        colour = ["tab:red" if drops[k]["significant"] else "0.6" for k in kinds]
        y = np.arange(len(kinds))
        ax.barh(y, est, color=colour, xerr=[np.clip(est - low, 0, None), np.clip(high - est, 0, None)],
                error_kw={"elinewidth": 0.8, "capsize": 2})
        verdict = "passes" if summary[metric]["passes"] else "fails"
        name = "Findings exact\n(positive control)" if metric == CONTROL else METRIC_LABELS[metric]
        ax.set_title(f"{name}\n{verdict}: {summary[metric]['ordered']['estimate']:.2f} ordered",
                     fontsize=8)
        ax.set_xlabel("score drop / range", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yticks(y, [KIND_LABELS[k] for k in kinds])
        ax.invert_yaxis()
        ax.axvline(0, color="k", lw=0.5)
    fig.tight_layout()
    return fig
