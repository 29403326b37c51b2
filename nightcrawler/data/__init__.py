"""Data: video lists, decoding, temporal sampling, enhancement, clip transforms, the UG2 dataset and its loaders."""

from nightcrawler.data.csvs import CsvFormatError, VideoRow, parse_video_list, write_video_list
from nightcrawler.data.decoders import VideoDecodeError, open_video
from nightcrawler.data.enhance import (
    ENHANCEMENT_REGISTRY,
    Enhancement,
    build_enhancement,
    phase_enhancement,
    split_enhancement,
)
from nightcrawler.data.loader import EvalShardSampler, build_loader, collate_test, collate_train
from nightcrawler.data.splits import (
    CLASS_NAMES,
    DARK_SPLITS,
    SPLITS,
    TEST_SPLITS,
    TRAIN_SPLITS,
    class_names,
    split_info,
)
from nightcrawler.data.ug2 import UG2Dataset, build_dataset

__all__ = [
    "CLASS_NAMES",
    "DARK_SPLITS",
    "ENHANCEMENT_REGISTRY",
    "SPLITS",
    "TEST_SPLITS",
    "TRAIN_SPLITS",
    "CsvFormatError",
    "Enhancement",
    "EvalShardSampler",
    "UG2Dataset",
    "VideoDecodeError",
    "VideoRow",
    "build_dataset",
    "build_enhancement",
    "build_loader",
    "class_names",
    "collate_test",
    "collate_train",
    "open_video",
    "parse_video_list",
    "phase_enhancement",
    "split_enhancement",
    "split_info",
    "write_video_list",
]
