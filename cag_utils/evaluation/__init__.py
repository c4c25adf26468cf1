"""Notebook 06: scoring the generated summaries.

``evaluation``: per-item table, metric grid, paired significance, the selection rule and the
paper's table; ``metrics/``: VLScore, BLEU/chrF, findings F1, output quality and metric validity;
``rating``: the blinded rating packet and agreement; ``plots``: the notebook's figures.
"""
