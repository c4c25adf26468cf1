"""Notebooks 03 and 04: key frames and the corpus.

``extraction`` (03): the key-frame rule, batched CNN inference and the oracle; ``corpus`` (04):
one record per key frame with its exam's reports, the image folder on disk, the datasheet and
the text statistics.
"""
