"""Data: video lists, decoding, temporal sampling, clip transforms, the UG2 dataset and its loaders."""

from nightcrawler.data.csvs import CsvFormatError, VideoRow, parse_video_list, write_video_list
from nightcrawler.data.decoders import VideoDecodeError, open_video
from nightcrawler.data.loader import EvalShardSampler, build_loader, collate_test, collate_train
from nightcrawler.data.ug2 import (
    CLASS_NAMES,
    DARK_SPLITS,
    SPLITS,
    TEST_SPLITS,
    TRAIN_SPLITS,
    UG2Dataset,
    build_dataset,
    default_gamma,
)

__all__ = [
    "CLASS_NAMES",
    "DARK_SPLITS",
    "SPLITS",
    "TEST_SPLITS",
    "TRAIN_SPLITS",
    "CsvFormatError",
    "EvalShardSampler",
    "UG2Dataset",
    "VideoDecodeError",
    "VideoRow",
    "build_dataset",
    "build_loader",
    "collate_test",
    "collate_train",
    "default_gamma",
    "open_video",
    "parse_video_list",
    "write_video_list",
]
