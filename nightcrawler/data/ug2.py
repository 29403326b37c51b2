"""The UG2+/ARID video dataset: split name -> CSV list + video roots -> decoded, enhanced, transformed clips.

The splits and their lists, roots and lighting are :mod:`nightcrawler.data.splits`.
A row is read from the first root holding its path (``DATA.ROOT_FALLBACK``); the fallbacks never mix sources
whose file names collide (dark-train and Test both use ``N.mp4``), see ``data/README.md``.

Training items decode one sparse (``ug2_sparse``) or dense (``ug2``) clip and return ``AUG.NUM_SAMPLE``
augmented copies (and, for dual-light distillation, a teacher's enhanced twin of each, made with the same random
draws); test items decode the union of all temporal views' frames once and cut every view x crop
from it, view-major, crop-minor.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from nightcrawler.data import sampling
from nightcrawler.data.csvs import VideoRow, parse_video_list
from nightcrawler.data.decoders import BackendUnavailableError, VideoDecodeError, open_video, parse_backend
from nightcrawler.data.enhance import Enhancement, canonical, enhancement_list, gamma_spec, split_enhancement
from nightcrawler.data.splits import split_info
from nightcrawler.data.transforms import EnhancementLike, test_views
from nightcrawler.utils.seeding import capture_random_states

logger = logging.getLogger(__name__)

SPLIT_DEFAULT = "split"  # build_dataset's enhancement argument meaning "the split's own"
MAX_REPLACEMENTS = 20  # training: videos tried in a row for one item before giving up


def resolve_video_paths(rows: Sequence[VideoRow], roots: Sequence[str]) -> tuple[list[str], list[str]]:
    """Full path of every row (first root holding it; the primary root when none does) and the missing rows."""
    if not roots:
        raise ValueError("at least one video root is needed")
    paths, missing = [], []
    for row in rows:
        for root in roots:
            candidate = os.path.join(root, row.path)
            if os.path.isfile(candidate):
                paths.append(candidate)
                break
        else:
            paths.append(os.path.join(roots[0], row.path))
            missing.append(row.path)
    return paths, missing


OpenFn = Callable[..., Any]


class UG2Dataset(Dataset):
    """Videos of one split, as training items (augmented clips) or test items (all views x crops).

    Training item: ``inputs`` float32 (num_sample, 3, T, S, S), ``label``, ``index``, ``probs`` float32
    (num_classes,) (CSV scores of pseudo lists, else zeros) and ``failed`` (videos that failed to decode while
    producing the item; they were replaced by random others); with ``teacher_enhancement`` also
    ``teacher_inputs``, the same shape: every clip again from the same frames enhanced by ``teacher_enhancement``,
    through the same transform with the same random draws (crop, flip, RandAugment, erasing).

    Test item: ``inputs`` float32 (views * crops, 3, T, S, S) view-major, ``label``, ``index``, ``name`` (the
    CSV path) and ``ok`` (False only when ``skip_bad`` let an undecodable video through as zeros).

    Args:
        split: split name (decides training vs test items; see :data:`SPLITS`).
        csv_path: the video list, or its rows given directly (:func:`build_file_dataset`).
        video_roots: folders the list's paths are relative to, tried in order.
        num_classes: classes C (labels must lie in [-1, C)).
        separator: list field separator.
        num_frames: frames T per clip.
        dense: dense sampling (the expert's ``ug2`` dataset) instead of sparse segment sampling.
        sampling_rate, use_offset_sampling: dense sampling parameters.
        num_views, num_crops, crop_size: test clips per video and their size S.
        enhancement: what brightens the decoded uint8 frames: an :class:`~nightcrawler.data.enhance.Enhancement`
            or spec (None: none). Test splits also take a list: each video is decoded once and its
            ``V x C`` clips are made with every enhancement in turn (``E * V * C`` clips, enhancement-major).
        gamma: the original's argument, a gamma value (None or <= 0: none); used when ``enhancement`` is not
            given.
        mean, std: normalisation.
        train_transform: callable ``(frames uint8 (T, H, W, 3), rng: random.Random)`` -> float32
            (3, T, S, S), e.g. :class:`~nightcrawler.data.transforms.TrainTransform` (training splits).
        num_sample: augmented clips per decoded training video.
        backend, decode_threads: decoder (see :func:`nightcrawler.data.decoders.open_video`).
        retries: decode attempts per video before it counts as failed.
        skip_bad: test splits: turn undecodable videos into ``ok=False`` items instead of raising.
        open_fn: ``open_fn(path, backend, threads)`` -> reader (tests inject fake videos).
        teacher_enhancement: training splits: also return ``teacher_inputs`` (None: not made); the enhancement is
            applied to the decoded uint8 frames (after ``enhancement``) before the transform.
        frame_control: test splits: frame-order control of every clip (see
            :func:`~nightcrawler.data.sampling.control_frames`; "" frames as sampled).
        control_seed: seed of the ``"shuffle"`` control (with the video's index: one permutation per video).
    """

    def __init__(
        self,
        split: str,
        csv_path: str | os.PathLike | Sequence[VideoRow],
        video_roots: Sequence[str],
        *,
        num_classes: int,
        separator: str = ",",
        num_frames: int = 8,
        dense: bool = False,
        sampling_rate: int = 1,
        use_offset_sampling: bool = True,
        num_views: int = 1,
        num_crops: int = 1,
        crop_size: int = 224,
        enhancement: EnhancementLike | Sequence[EnhancementLike] = None,
        gamma: float | None = None,
        mean: Sequence[float] = (0.45, 0.45, 0.45),
        std: Sequence[float] = (0.225, 0.225, 0.225),
        train_transform: Callable[..., torch.Tensor] | None = None,
        num_sample: int = 1,
        backend: str = "auto",
        decode_threads: int = 1,
        retries: int = 3,
        skip_bad: bool = False,
        open_fn: OpenFn = open_video,
        teacher_enhancement: EnhancementLike = None,
        frame_control: str = "",
        control_seed: int = 0,
    ):
        info = split_info(split)
        self.split = split
        self.training = info.training
        if self.training and train_transform is None:
            raise ValueError(f"split {split} yields training items and needs a train_transform")
        if num_views < 1 or num_crops < 1 or num_sample < 1 or retries < 1:
            raise ValueError(
                f"num_views ({num_views}), num_crops ({num_crops}), num_sample ({num_sample}) and retries "
                f"({retries}) must all be >= 1"
            )
        if isinstance(csv_path, (str, os.PathLike)):
            self.csv_path = os.fspath(csv_path)
            self.rows = parse_video_list(
                self.csv_path, num_classes=num_classes, separator=separator, require_label=info.require_label
            )
        else:
            self.rows = list(csv_path)
            self.csv_path = f"<{len(self.rows)} files given directly>"
            if not self.rows:
                raise ValueError(f"split {split}: no videos given")
        self.video_roots = [os.fspath(r) for r in video_roots]
        self.paths, missing = resolve_video_paths(self.rows, self.video_roots)
        if missing:
            listing = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
            roots = " or ".join(r for r in self.video_roots if r)
            where = f"are not under {roots}" if roots else "do not exist"
            message = f"{len(missing)} of {len(self.rows)} videos of split {split} ({self.csv_path}) {where}: {listing}"
            if not self.training and not skip_bad:
                raise FileNotFoundError(message + " (TEST.SKIP_BAD_VIDEOS True skips them)")
            logger.warning(
                "%s; %s", message, "they will be skipped" if not self.training else "they will be replaced"
            )
        self.num_classes = num_classes
        self.num_frames = num_frames
        self.dense = dense
        self.sampling_rate = sampling_rate
        self.use_offset_sampling = use_offset_sampling
        self.num_views = num_views
        self.num_crops = num_crops
        self.crop_size = crop_size
        if enhancement is None:
            enhancement = gamma_spec(gamma)
        if isinstance(enhancement, (list, tuple)):
            self.enhancements = tuple(enhancement_list(enhancement))
        else:
            self.enhancements = (canonical(enhancement),)
        if not self.enhancements or (self.training and len(self.enhancements) != 1):
            raise ValueError(f"split {split}: training items take one enhancement, test items at least one")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.train_transform = train_transform
        self.num_sample = num_sample
        self.backend = parse_backend(backend)[0]
        self.decode_threads = decode_threads
        self.retries = retries
        self.skip_bad = skip_bad
        self.open_fn = open_fn
        if teacher_enhancement is not None and not self.training:
            raise ValueError(f"split {split}: only training items have a teacher's copy")
        self.teacher_enhancement = None if teacher_enhancement is None else canonical(teacher_enhancement)
        if frame_control not in sampling.FRAME_CONTROLS or (frame_control and self.training):
            raise ValueError(
                f"split {split}: frame control {frame_control!r} (test splits take one of "
                f"{list(sampling.FRAME_CONTROLS)}, training splits none)"
            )
        self.frame_control, self.control_seed = frame_control, control_seed
        self.known_bad: set[int] = (
            set()
        )  # test splits: positions a pre-flight check found bad (skipped unread)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def enhancement(self) -> Enhancement:
        """The (first) enhancement of the items."""
        return self.enhancements[0]

    @property
    def clips_per_video(self) -> int:
        """Clips of a test item: enhancements x views x crops."""
        return len(self.enhancements) * self.num_views * self.num_crops

    def __repr__(self) -> str:
        kind = "training" if self.training else f"{self.num_views}x{self.num_crops}"
        specs = "/".join(e.spec for e in self.enhancements)
        return f"UG2Dataset({self.split}, {len(self)} videos, {kind}, enhancement={specs}, {self.csv_path})"

    # ------------------------------------------------------------------------------------------ sampling
    def clip_indices(
        self, num_video_frames: int, view: int | None, rng: random.Random | None = None
    ) -> list[int]:
        """Frame indices of one clip: ``view=None`` draws a training clip from ``rng``, else temporal view."""
        if self.dense:
            return sampling.dense_indices(
                num_video_frames,
                self.num_frames,
                self.sampling_rate,
                view=view,
                num_views=self.num_views,
                use_offset=self.use_offset_sampling,
                rng=rng,
            )
        return sampling.uniform_indices(
            num_video_frames, self.num_frames, view=view, num_views=self.num_views, rng=rng
        )

    # ------------------------------------------------------------------------------------------ decoding
    def _decode(self, index: int, pick: Callable[[int], list[int]]) -> tuple[torch.Tensor, list[int]]:
        """Opens video ``index`` and reads ``pick(num_frames)``; up to ``retries`` attempts."""
        path = self.paths[index]
        error: VideoDecodeError | None = None
        for _ in range(self.retries):
            try:
                with self.open_fn(path, self.backend, self.decode_threads) as reader:
                    wanted = pick(int(reader.num_frames))
                    return reader.frames_at(wanted), wanted
            except VideoDecodeError as exc:
                error = exc
            except BackendUnavailableError:
                raise  # a set-up problem, not a bad video
            except (OSError, RuntimeError, ValueError, IndexError) as exc:
                error = VideoDecodeError(path, f"{type(exc).__name__}: {exc}")
        assert error is not None
        raise error

    # ------------------------------------------------------------------------------------------ items
    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for split {self.split} of {len(self)} videos")
        return self._training_item(index) if self.training else self._test_item(index)

    def _training_item(self, index: int) -> dict[str, Any]:
        # one draw from torch's RNG seeds this item: DataLoader worker seeding makes epochs and workers differ
        rng = random.Random(int(torch.randint(0, 2**62, ()).item()))
        failed = 0
        for _ in range(MAX_REPLACEMENTS):
            try:
                frames, _ = self._decode(index, lambda n: self.clip_indices(n, None, rng))
                break
            except VideoDecodeError as exc:
                failed += 1
                logger.warning("split %s: %s; using a random other video instead", self.split, exc)
                if len(self) > 1:
                    index = (index + 1 + rng.randrange(len(self) - 1)) % len(self)
        else:
            raise RuntimeError(
                f"split {self.split}: {MAX_REPLACEMENTS} videos in a row failed to decode (last: "
                f"{self.paths[index]}); check the video roots and DATA.DECODING_BACKEND"
            )
        if not self.enhancement.is_identity:
            frames = self.enhancement(frames)
        assert self.train_transform is not None
        teacher = None
        if self.teacher_enhancement is None:
            clips = torch.stack([self.train_transform(frames, rng) for _ in range(self.num_sample)])
        else:
            clips, teacher = self._paired_clips(frames, rng)
        row = self.rows[index]
        probs = torch.zeros(self.num_classes, dtype=torch.float32)
        if row.probs is not None:
            probs = torch.tensor(row.probs, dtype=torch.float32)
        item = {"inputs": clips, "label": row.label, "index": index, "probs": probs, "failed": failed}
        if teacher is not None:
            item["teacher_inputs"] = teacher
        return item

    def _paired_clips(self, frames: torch.Tensor, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
        """The NUM_SAMPLE clips of ``frames`` and their teacher twins: each twin replays its clip's random draws
        (``rng``, Python's, NumPy's and torch's generators) on the teacher-enhanced frames; the generators end
        where the clips alone leave them, so the clips equal those of a dataset without a teacher."""
        assert self.train_transform is not None and self.teacher_enhancement is not None
        enhanced = self.teacher_enhancement(frames)
        clips, twins = [], []
        for _ in range(self.num_sample):
            start = capture_random_states(rng)
            clips.append(self.train_transform(frames, rng))
            end = capture_random_states(rng)
            start.restore(rng)
            twins.append(self.train_transform(enhanced, rng))
            end.restore(rng)
        return torch.stack(clips), torch.stack(twins)

    def test_clip_indices(self, num_video_frames: int, index: int = 0) -> list[list[int]]:
        """Frame indices of every temporal view of video ``index`` (``num_video_frames`` frames), after the
        frame control (whose permutation depends on the video, not on the view)."""
        seed = f"{self.control_seed}:{index}"
        return [
            sampling.control_frames(self.clip_indices(num_video_frames, view), self.frame_control, seed)
            for view in range(self.num_views)
        ]

    def _test_item(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        views: list[list[int]] = []

        def union_of_views(n: int) -> list[int]:
            views[:] = self.test_clip_indices(n, index)
            return sorted({i for v in views for i in v})

        try:
            if index in self.known_bad:
                raise VideoDecodeError(self.paths[index], "found bad by the pre-flight check")
            frames, union = self._decode(index, union_of_views)
        except VideoDecodeError as exc:
            if not self.skip_bad:
                raise
            logger.warning("split %s: skipping %s", self.split, exc)
            shape = (self.clips_per_video, 3, self.num_frames, self.crop_size, self.crop_size)
            return {
                "inputs": torch.zeros(shape),
                "label": row.label,
                "index": index,
                "name": row.path,
                "ok": False,
            }
        position = {frame: i for i, frame in enumerate(union)}
        clips = []
        for enhancement in self.enhancements:
            # a pointwise enhancement is fused into each view's normalisation; another one sees the whole
            # decoded union once
            pointwise = enhancement.lut() is not None
            source = frames if pointwise else enhancement(frames)
            fused = enhancement if pointwise else None
            for view in views:
                view_frames = source[[position[i] for i in view]]
                clips.append(
                    test_views(view_frames, self.crop_size, self.num_crops, fused, self.mean, self.std)
                )
        inputs = torch.cat(clips)
        return {"inputs": inputs, "label": row.label, "index": index, "name": row.path, "ok": True}


# ---------------------------------------------------------------------------------------------- builders


def split_paths(cfg, split: str) -> tuple[str, list[str]]:
    """(list file, video roots) of ``split`` under ``cfg.DATA.PATH_PREFIX``; raises if the list is missing."""
    info = split_info(split)
    prefix = cfg.DATA.PATH_PREFIX
    name = cfg.DATA[info.csv_key]
    if not name:
        raise ValueError(f"split {split} needs DATA.{info.csv_key} (a list relative to DATA.PATH_PREFIX)")
    csv_path = os.path.join(prefix, name)
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(
            f"video list of split {split} not found: {csv_path} (DATA.PATH_PREFIX={prefix!r}, "
            f"DATA.{info.csv_key}={name!r}; tools/generate_csv.py writes the lists, see data/README.md)"
        )
    keys = info.root_keys if cfg.DATA.ROOT_FALLBACK else info.root_keys[:1]
    return csv_path, [os.path.join(prefix, cfg.DATA[k]) for k in keys]


def build_train_transform(cfg) -> Callable[..., torch.Tensor]:
    """The training clip transform of spec §3.1 from ``cfg`` (RandAugment and erasing only with AUG.ENABLE;
    random resized crop when DATA.TRAIN_JITTER_SCALES_RELATIVE is set, else short-side jitter + crop)."""
    from nightcrawler.data.transforms import TrainTransform

    aug = cfg.AUG.ENABLE
    scale = list(cfg.DATA.TRAIN_JITTER_SCALES_RELATIVE) or None
    return TrainTransform(
        crop_size=cfg.DATA.TRAIN_CROP_SIZE,
        rand_augment=cfg.AUG.AA_TYPE if aug and cfg.AUG.AA_TYPE else None,
        interpolation=cfg.AUG.INTERPOLATION,
        scale=scale,
        ratio=list(cfg.DATA.TRAIN_JITTER_ASPECT_RELATIVE) or (0.75, 1.3333),
        flip_prob=0.5 if cfg.DATA.RANDOM_FLIP else 0.0,
        re_prob=cfg.AUG.RE_PROB if aug else 0.0,
        re_mode=cfg.AUG.RE_MODE,
        re_count=cfg.AUG.RE_COUNT,
        mean=cfg.DATA.MEAN,
        std=cfg.DATA.STD,
        jitter_scales=None if scale else list(cfg.DATA.TRAIN_JITTER_SCALES),
    )


def build_dataset(
    cfg,
    split: str,
    *,
    enhancement: EnhancementLike | Sequence[EnhancementLike] | str = SPLIT_DEFAULT,
    views: int | None = None,
    crops: int | None = None,
    open_fn: OpenFn = open_video,
    teacher_enhancement: EnhancementLike = None,
) -> UG2Dataset:
    """The dataset of ``split`` configured from ``cfg``.

    Args:
        enhancement: ``"split"`` (default): the split's own (:func:`~nightcrawler.data.enhance.split_enhancement`);
            else an enhancement, spec, gamma value or None, or (test splits) a list of them (the engine passes
            its phase's choice explicitly).
        views, crops: test splits: temporal views and spatial crops (default TEST.NUM_ENSEMBLE_VIEWS and
            TEST.NUM_SPATIAL_CROPS); ignored for training splits.
        open_fn: reader factory (tests).
        teacher_enhancement: training splits: items also carry ``teacher_inputs`` made with this enhancement
            (dual-light distillation; None: not made).
    """
    info = split_info(split)
    csv_path, roots = split_paths(cfg, split)
    if isinstance(enhancement, str) and enhancement == SPLIT_DEFAULT:
        enhancement = split_enhancement(cfg, split, info.training)
    common = _dataset_kwargs(cfg, info.training, enhancement, open_fn)
    if info.training:
        return UG2Dataset(
            split,
            csv_path,
            roots,
            crop_size=cfg.DATA.TRAIN_CROP_SIZE,
            train_transform=build_train_transform(cfg),
            num_sample=cfg.AUG.NUM_SAMPLE,
            teacher_enhancement=teacher_enhancement,
            **common,
        )
    if teacher_enhancement is not None:
        raise ValueError(f"split {split}: only training splits make a teacher's copy of their clips")
    return UG2Dataset(
        split,
        csv_path,
        roots,
        num_views=views or cfg.TEST.NUM_ENSEMBLE_VIEWS,
        num_crops=crops or cfg.TEST.NUM_SPATIAL_CROPS,
        crop_size=cfg.DATA.TEST_CROP_SIZE,
        skip_bad=cfg.TEST.SKIP_BAD_VIDEOS,
        **common,
    )


def build_file_dataset(
    cfg,
    paths: Sequence[str | os.PathLike],
    *,
    enhancement: EnhancementLike | Sequence[EnhancementLike],
    views: int,
    crops: int,
    skip_bad: bool = True,
    open_fn: OpenFn = open_video,
) -> UG2Dataset:
    """Test items of video files given directly (no list, no split layout): the tester's sampling (TEST.DATASET),
    crops and normalisation from ``cfg``; labels are unknown (-1) and ``name`` is the path as given."""
    rows = [VideoRow(os.fspath(p), -1) for p in paths]
    return UG2Dataset(
        "test",
        rows,
        [""],  # paths are used as given (absolute, or relative to the working folder)
        num_views=views,
        num_crops=crops,
        crop_size=cfg.DATA.TEST_CROP_SIZE,
        skip_bad=skip_bad,
        **_dataset_kwargs(cfg, False, enhancement, open_fn),
    )


def _dataset_kwargs(cfg, training: bool, enhancement, open_fn: OpenFn) -> dict[str, Any]:
    """The dataset arguments of training or test items, from ``cfg``."""
    dataset_name = cfg.TRAIN.DATASET if training else cfg.TEST.DATASET
    if dataset_name not in ("ug2", "ug2_sparse"):
        raise ValueError(
            f"{'TRAIN' if training else 'TEST'}.DATASET must be ug2 or ug2_sparse, got {dataset_name!r}"
        )
    controls = {} if training else {"frame_control": cfg.TEST.FRAME_CONTROL, "control_seed": cfg.RNG_SEED}
    return dict(
        **controls,
        num_classes=cfg.MODEL.NUM_CLASSES,
        separator=cfg.DATA.PATH_LABEL_SEPARATOR,
        num_frames=cfg.DATA.NUM_FRAMES,
        dense=dataset_name == "ug2",
        sampling_rate=cfg.DATA.SAMPLING_RATE,
        use_offset_sampling=cfg.DATA.USE_OFFSET_SAMPLING,
        enhancement=enhancement,
        mean=cfg.DATA.MEAN,
        std=cfg.DATA.STD,
        backend=cfg.DATA.DECODING_BACKEND,
        decode_threads=cfg.DATA.DECODE_THREADS,
        retries=cfg.DATA.DECODE_RETRIES,
        open_fn=open_fn,
    )
