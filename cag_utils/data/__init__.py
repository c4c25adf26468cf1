"""Notebook 01: the cohort as labelled frames.

DICOM read/write (``dicom``: writer and reader; ``dicom_decode``: pixel decoding and the fixed
8-bit rule; ``dicom_header``: every header check; ``dicom_errors``; ``dicom_fuzz``), PS3.15
de-identification (``deid``), the ingest of an export (``ingest``), the frame-sampling rule
(``sampling``), patient splits (``splits``), the six classes (``labels``), the saved dataset
(``dataset``), the realism table (``realism``), single-cue baselines (``baselines``, also scored
with the CNN's metric in notebook 02) and the notebook's figures (``plots``).
"""
