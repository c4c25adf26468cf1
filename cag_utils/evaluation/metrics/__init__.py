"""Evaluation metrics of notebook 06: VLScore, BLEU/chrF (sacrebleu) and findings accuracy.

One concern a module: ``vlscore`` (image-aware report similarity), ``text`` (sacrebleu wrappers
with patient intervals and paired significance), ``findings`` (the summary parser and lesion F1).
Every headline number is a ``cag_utils.intervals.patient_bootstrap`` dict whose estimate is the
library's own score (sacrebleu, scikit-learn) on the saved per-item rows.
"""
