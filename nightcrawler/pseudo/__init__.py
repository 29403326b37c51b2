"""Pseudo-label generation, threshold search and the final ensemble vote (numpy only, no model code).

Modules: ``io`` (PKL / CSV reading, alignment, writers), ``fuse`` (weighted fusion with class-conditional
weights), ``thresholds`` (row selection), ``stage`` (one pseudo-label stage), ``search`` (threshold sweep),
``vote`` (ensemble modes, post-processing passes, vote, submission), ``report`` (per-class summary and chart),
``config`` (the YAML files under ``configs/pseudo`` and ``configs/ensemble``), ``cli`` (the scripts).
"""

from nightcrawler.pseudo.fuse import (
    FusionResult,
    FusionSpec,
    Replacement,
    WeightRule,
    fuse_predictions,
    softmax,
)
from nightcrawler.pseudo.io import (
    AlignedOutputs,
    ModelOutput,
    PseudoLabelError,
    align_outputs,
    load_pkl,
    read_pseudo_csv,
    read_video_list,
    write_pseudo_csv,
)
from nightcrawler.pseudo.thresholds import SelectionSpec, select_rows

__all__ = [
    "AlignedOutputs",
    "FusionResult",
    "FusionSpec",
    "ModelOutput",
    "PseudoLabelError",
    "Replacement",
    "SelectionSpec",
    "WeightRule",
    "align_outputs",
    "fuse_predictions",
    "load_pkl",
    "read_pseudo_csv",
    "read_video_list",
    "select_rows",
    "softmax",
    "write_pseudo_csv",
]
