"""The six frame classes of the paper: laterality (LCA/RCA) x key-frame category."""
from __future__ import annotations

LATERALITIES: tuple[str, ...] = ("LCA", "RCA")
KEY_FRAME_CATEGORIES: tuple[str, ...] = ("better", "bad", "others")
# Class order is fixed: it is the order of the CNN's output logits.
CLASSES: tuple[str, ...] = tuple(f"{lat}_{kf}" for lat in LATERALITIES for kf in KEY_FRAME_CATEGORIES)


def class_index(laterality: str, key_frame_category: str) -> int:
    """Index in CLASSES of one (laterality, key-frame category) pair; ValueError if unknown."""
    if laterality not in LATERALITIES:
        raise ValueError(f"unknown laterality {laterality!r}; expected one of {LATERALITIES}")
    if key_frame_category not in KEY_FRAME_CATEGORIES:
        raise ValueError(
            f"unknown key-frame category {key_frame_category!r}; expected one of {KEY_FRAME_CATEGORIES}"
        )
    return LATERALITIES.index(laterality) * len(KEY_FRAME_CATEGORIES) + KEY_FRAME_CATEGORIES.index(
        key_frame_category
    )


def split_class(index: int) -> tuple[str, str]:
    """(laterality, key-frame category) of a class index."""
    return tuple(CLASSES[index].split("_", 1))  # type: ignore[return-value]
