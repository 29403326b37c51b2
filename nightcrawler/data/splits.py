"""The data's fixed facts: the 11 action classes and the splits (list key, video roots, item kind, lighting).

Splits (spec §1.5, plus the test-mode ``total_unlabel``):

==================== ============================ ================================ ========== =======
split                list (DATA key)              roots, primary first             items      dark
==================== ============================ ================================ ========== =======
train_label          CSV_TRAIN_LABEL              ROOT_LABELED, ROOT_DRY           training   no
train_unlabel        CSV_TOTAL_UNLABEL            ROOT_DARK, ROOT_ARID             training   yes
train_pseudo_label   PSEUDO_CSV                   ROOT_DARK, ROOT_ARID             training   yes
val_dry              CSV_VAL_DRY                  ROOT_DRY, ROOT_LABELED           test       no
arid                 CSV_ARID                     ROOT_ARID, ROOT_DARK             test       yes
dark_unlabel         CSV_DARK_UNLABEL             ROOT_DARK                        test       yes
total_unlabel        CSV_TOTAL_UNLABEL            ROOT_DARK, ROOT_ARID             test       yes
test                 CSV_TEST                     ROOT_TEST                        test       yes
==================== ============================ ================================ ========== =======

Dark splits are the ones the original's gamma rule brightens (see :mod:`nightcrawler.data.enhance`).
"""

from __future__ import annotations

from dataclasses import dataclass

CLASS_NAMES = ("Drink", "Jump", "Pick", "Pour", "Push", "Run", "Sit", "Stand", "Turn", "Walk", "Wave")


def class_names(num_classes: int) -> list[str] | None:
    """The UG2 class names when ``num_classes`` is theirs (11), else None (another label set)."""
    return list(CLASS_NAMES) if num_classes == len(CLASS_NAMES) else None


@dataclass(frozen=True)
class SplitInfo:
    """Where a split's list and videos are, and what kind of items it yields."""

    name: str
    training: bool
    csv_key: str  # DATA key holding the list's file name (relative to PATH_PREFIX)
    root_keys: tuple[str, ...]  # DATA keys of the video roots, primary first
    dark: bool  # low-light footage
    require_label: bool = False  # rows must carry a class (training on labels)


SPLITS: dict[str, SplitInfo] = {
    s.name: s
    for s in (
        SplitInfo(
            "train_label", True, "CSV_TRAIN_LABEL", ("ROOT_LABELED", "ROOT_DRY"), False, require_label=True
        ),
        SplitInfo("train_unlabel", True, "CSV_TOTAL_UNLABEL", ("ROOT_DARK", "ROOT_ARID"), True),
        SplitInfo(
            "train_pseudo_label", True, "PSEUDO_CSV", ("ROOT_DARK", "ROOT_ARID"), True, require_label=True
        ),
        SplitInfo("val_dry", False, "CSV_VAL_DRY", ("ROOT_DRY", "ROOT_LABELED"), False),
        SplitInfo("arid", False, "CSV_ARID", ("ROOT_ARID", "ROOT_DARK"), True),
        SplitInfo("dark_unlabel", False, "CSV_DARK_UNLABEL", ("ROOT_DARK",), True),
        SplitInfo("total_unlabel", False, "CSV_TOTAL_UNLABEL", ("ROOT_DARK", "ROOT_ARID"), True),
        SplitInfo("test", False, "CSV_TEST", ("ROOT_TEST",), True),
    )
}
TRAIN_SPLITS = tuple(n for n, s in SPLITS.items() if s.training)
TEST_SPLITS = tuple(n for n, s in SPLITS.items() if not s.training)
DARK_SPLITS = tuple(n for n, s in SPLITS.items() if s.dark and not s.training)
DARK_TRAINING_SPLITS = tuple(n for n, s in SPLITS.items() if s.dark and s.training)


def split_info(split: str) -> SplitInfo:
    """The :class:`SplitInfo` of ``split``; raises ValueError naming the valid splits."""
    try:
        return SPLITS[split]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}") from None
