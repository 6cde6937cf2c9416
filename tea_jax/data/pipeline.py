"""The grain pipeline: sources -> TSN sampling -> augmentation -> per-host batches."""

import dataclasses
import logging
import math
import os

import av
import cv2
import grain
import jax
import ml_collections
import numpy as np
from absl import flags

from tea_jax import storage
from tea_jax.data import records, sampling, transforms
from tea_jax.data.config import split_candidates
from tea_jax.data.errors import DataError
from tea_jax.data.listfiles import class_folder_videos, read_list
from tea_jax.data.sources import (
    ArrayRecordSource,
    FrameFolderSource,
    Source,
    TfdsSource,
    VideoFileSource,
    VideoRecordSource,
)
from tea_jax.data.workers import exit_with_parent_init

PROTOCOLS = {"efficient": (1, 1), "accuracy": (10, 3)}
_MAX_ATTEMPTS = 16
_READ_ERRORS = (OSError, ValueError, EOFError, av.FFmpegError, cv2.error)


@dataclasses.dataclass(frozen=True)
class _Reader:
    """Reads and augments one example in a worker; errors come back inside the element.

    Each element carries `_bad` (the 'path<TAB>reason' lines of the bad examples met while
    producing it) and `_ok` (False: the element holds no real example and the run must stop), so
    the main process reports bad input once, cleanly, instead of a worker traceback.
    """

    source: Source
    num_classes: int
    num_segments: int
    image_size: int
    short_side: int | None
    dense: bool
    on_error: str

    def _open(self, index: int):
        clip = self.source.open(index)
        if not 0 <= clip.label < self.num_classes:
            raise DataError(clip.name, f"label {clip.label} outside [0, {self.num_classes})")
        return clip

    def _guarded(self, index: int, load):
        try:
            return load(index)
        except DataError:
            raise
        except _READ_ERRORS as e:
            raise DataError(self.source.name(index), f"{type(e).__name__}: {e}") from None


@dataclasses.dataclass(frozen=True)
class TrainReader(_Reader):
    """Random TSN clip with multi-scale crop and flip; bad examples replaced when skipping."""

    scales: tuple[float, ...] = (1, 0.875, 0.75, 0.66)
    max_distort: int = 1
    flip: bool = True
    flip_labels: tuple[tuple[int, int], ...] = ()

    def _load(self, index: int, rng: np.random.Generator):
        clip = self._open(index)
        frames = clip.read(
            sampling.train_indices(clip.num_frames, self.num_segments, rng, dense=self.dense)
        )
        _, height, width, _ = frames.shape
        box = transforms.multiscale_crop_box(
            rng,
            *transforms.scaled_size(width, height, self.short_side),
            self.image_size,
            self.scales,
            self.max_distort,
        )
        video = transforms.crop_resize(frames, box, self.short_side, self.image_size)
        label = clip.label
        if self.flip and rng.random() < 0.5:
            video = video[:, :, ::-1]
            label = dict(self.flip_labels).get(label, label)
        return video, label

    def __call__(self, index: int, rng: np.random.Generator) -> dict:
        bad = []
        for _ in range(_MAX_ATTEMPTS):
            try:
                video, label = self._guarded(index, lambda i: self._load(i, rng))
                return {
                    "video": video,
                    "label": np.int32(label),
                    "_bad": "\n".join(bad),
                    "_ok": True,
                }
            except DataError as e:
                bad.append(f"{e.path}\t{e.reason}")
                if self.on_error == "raise":
                    break
                index = int(rng.integers(len(self.source)))
        shape = (self.num_segments, self.image_size, self.image_size, 3)
        return {
            "video": np.zeros(shape, np.uint8),
            "label": np.int32(0),
            "_bad": "\n".join(bad),
            "_ok": False,
        }


@dataclasses.dataclass(frozen=True)
class EvalReader(_Reader):
    """The views (clips x crops) of an example; index -1 is padding.

    Several clips are random TSN clips when `random_clips` (drawn from `seed` and the example's
    index, so every host and every run draw the same), fixed offsets otherwise; one clip takes
    the segment centres. A bad example is an error with 'raise'; with 'skip' it comes back
    masked out.
    """

    num_clips: int = 1
    num_crops: int = 1
    crop_size: int = 224
    random_clips: bool = False
    seed: int = 0

    def load(self, index: int) -> tuple[np.ndarray, int]:
        """The views of example `index`: uint8 (clips * crops, T, crop, crop, 3) and its label.

        Raises:
          DataError: the example cannot be read.
        """
        return self._guarded(index, self._load)

    def _load(self, index: int):
        clip = self._open(index)
        random = self.random_clips and self.num_clips > 1
        indices = sampling.test_indices(
            clip.num_frames,
            self.num_segments,
            self.num_clips,
            dense=self.dense,
            rng=np.random.default_rng([self.seed, index]) if random else None,
        )
        frames = clip.read(indices.reshape(-1))
        _, height, width, _ = frames.shape
        size = transforms.scaled_size(width, height, self.short_side)
        boxes = (
            [transforms.center_crop_box(*size, self.crop_size)]
            if self.num_crops == 1
            else transforms.three_crop_boxes(*size, self.crop_size)
        )
        views = np.stack(
            [transforms.crop_resize(frames, box, self.short_side, self.crop_size) for box in boxes]
        )
        views = views.reshape(len(boxes), self.num_clips, self.num_segments, *views.shape[2:])
        return views.swapaxes(0, 1).reshape(-1, *views.shape[2:]), clip.label

    def __call__(self, index: int) -> dict:
        shape = (
            self.num_clips * self.num_crops,
            self.num_segments,
            self.crop_size,
            self.crop_size,
            3,
        )
        element = {
            "video": None,
            "label": np.int32(0),
            "mask": False,
            "index": np.int32(index),
            "_bad": "",
            "_ok": True,
        }
        if index >= 0:
            try:
                video, label = self.load(index)
                element.update(video=video, label=np.int32(label), mask=True)
            except DataError as e:
                element.update(_bad=f"{e.path}\t{e.reason}", _ok=self.on_error != "raise")
        if element["video"] is None:
            element["video"] = np.zeros(shape, np.uint8)
        return element


class BadInputMonitor:
    """Runs in the main process on each batch: raises on fatal errors, logs and counts skips.

    Args:
      limit: more distinct bad examples than this stops the run.
      max_bad_fraction: reported in the error message.
    """

    def __init__(self, limit: float, max_bad_fraction: float):
        self.limit, self.max_bad_fraction = limit, max_bad_fraction
        self.bad: dict[str, str] = {}

    def __call__(self, batch: dict) -> dict:
        reports, ok = batch.pop("_bad"), batch.pop("_ok")
        for report in (r for r in reports[~ok] if r):
            path, reason = report.split("\n")[-1].split("\t", 1)
            raise DataError(path, reason)
        for line in (line for r in reports if r for line in r.split("\n")):
            path, reason = line.split("\t", 1)
            if path not in self.bad:
                self.bad[path] = reason
                logging.warning("skipped bad example %d: %s: %s", len(self.bad), path, reason)
            if len(self.bad) > self.limit:
                raise DataError(
                    path,
                    f"{reason}; {len(self.bad)} bad examples, more than max_bad_fraction="
                    f"{self.max_bad_fraction} of this host's share of the split",
                )
        return batch


@dataclasses.dataclass
class Loader:
    """Batches of one split for this host.

    Attributes:
      num_examples: examples in the whole split (all hosts).
      num_classes: classes of the dataset.
      num_batches: batches per epoch on this host (for evaluation: the exact count).
      dataset: the grain dataset; `iter(loader)` gives a checkpointable iterator.
    """

    num_examples: int
    num_classes: int
    num_batches: int
    dataset: grain.IterDataset

    def __iter__(self) -> grain.DatasetIterator:
        return iter(self.dataset)


def _list_path(cfg: ml_collections.ConfigDict, split: str) -> str | None:
    """The list file of `split` (or of the split standing for it); None when none is set."""
    path = next((cfg.get(f"{s}_list") for s in split_candidates(split) if cfg.get(f"{s}_list")), "")
    if not path:
        return None
    return path if storage.is_url(path) or os.path.isabs(path) else storage.join(cfg.root, path)


LOCAL_DATA = (
    "mount the bucket with gcsfuse (`gcsfuse --implicit-dirs BUCKET /mnt/BUCKET`) and give the "
    "mounted path, or copy the data to a local disk (`gcloud storage cp -r URL DIR`)."
)


def build_source(
    cfg: ml_collections.ConfigDict, split: str, on_error: str
) -> tuple[Source, int | None]:
    """The source of `split` and the dataset's class count (None when unknown).

    Raises:
      StorageError: the data are given as a URL (``gs://...``): the decoders and ArrayRecord
        readers read local files (a gcsfuse mount or a copy on the host).
    """
    if cfg.source == "tfds":
        storage.require_local(cfg.tfds_data_dir or "", "data.source='tfds'", LOCAL_DATA)
    else:
        storage.require_local(cfg.root, f"data.source='{cfg.source}'", LOCAL_DATA)
    lists = {
        "on_error": on_error,
        "max_bad_fraction": cfg.max_bad_fraction,
        "num_classes": cfg.num_classes,
    }
    if cfg.source == "synthetic":
        from tea_jax.data import synthetic  # not at import: `python -m tea_jax.data.synthetic`

        root = synthetic.ensure(cfg.root, synthetic.SyntheticOptions(**cfg.synthetic))
        list_path = os.path.join(root, "train.txt" if split == "train" else "val.txt")
        entries = read_list(list_path, with_num_frames=False, root=root, **lists)
        return VideoFileSource(entries), len(synthetic.TASKS[cfg.synthetic.task][0])
    if cfg.source == "frames":
        list_path = _list_path(cfg, split)
        if list_path is None:
            raise ValueError(f"data.{split}_list is not set for source '{cfg.source}'")
        entries = read_list(list_path, with_num_frames=True, root=cfg.root, **lists)
        return FrameFolderSource(entries, cfg.template), cfg.num_classes
    if cfg.source == "videos":
        list_path = _list_path(cfg, split)
        if list_path is not None:
            entries = read_list(list_path, with_num_frames=False, root=cfg.root, **lists)
            return VideoFileSource(entries), cfg.num_classes
        folders = [os.path.join(cfg.root, s) for s in split_candidates(split)]
        folder = next((f for f in folders if os.path.isdir(f)), folders[0])
        entries, classes = class_folder_videos(folder)
        return VideoFileSource(entries), len(classes)
    if cfg.source == "arrayrecord":
        found = next((s for s in split_candidates(split) if records.shard_paths(cfg.root, s)), None)
        if found is None:
            raise DataError(cfg.root, f"no ArrayRecord shards for split '{split}'")
        meta = records.read_meta(cfg.root)
        if records.layout(meta, found) == records.FRAME_RECORDS:
            return ArrayRecordSource(cfg.root, found), meta.get("num_classes")
        return VideoRecordSource(records.shard_paths(cfg.root, found)), meta.get("num_classes")
    if cfg.source == "tfds":
        from tea_jax.data import tfds_builders

        name, tfds_split, num_classes = tfds_builders.resolve(
            cfg.tfds_name, split, cfg.tfds_data_dir
        )
        return TfdsSource(name, tfds_split, cfg.tfds_data_dir), num_classes
    raise ValueError(f"unknown data source '{cfg.source}'")


def _flip_labels(cfg: ml_collections.ConfigDict) -> tuple[tuple[int, int], ...]:
    pairs = tuple(tuple(p) for p in cfg.flip_label_pairs)
    if not pairs and cfg.source == "synthetic":
        from tea_jax.data.synthetic import TASKS

        pairs = TASKS[cfg.synthetic.task][1]
    return tuple((a, b) for a, b in pairs) + tuple((b, a) for a, b in pairs)


def read_in_workers(ds: grain.MapDataset, workers: int, buffer_size: int = 1) -> grain.IterDataset:
    """`ds` read in order by `workers` processes (0: threads of this process); the workers end
    with this process."""
    ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=1 if workers else 2, prefetch_buffer_size=2)
    )
    if workers:
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        options = grain.multiprocessing.MultiprocessingOptions(workers, buffer_size)
        ds = ds.mp_prefetch(options, worker_init_fn=exit_with_parent_init())
    return ds


def eval_views(cfg: ml_collections.ConfigDict, protocol: str | None) -> tuple[int, int, int]:
    """``(clips, crops, crop size)`` of an evaluation protocol (None: ``cfg.test_clips`` x
    ``cfg.test_crops``); a video is ``clips * crops`` views of ``crop size`` squares.

    Raises:
      ValueError: a crop count other than 1 or 3.
    """
    clips, crops = PROTOCOLS[protocol] if protocol else (cfg.test_clips, cfg.test_crops)
    if crops not in (1, 3):
        raise ValueError(f"test crops must be 1 or 3, got {crops}")
    return clips, crops, cfg.image_size if crops == 1 else cfg.three_crop_size or cfg.short_side


def create_loader(
    cfg: ml_collections.ConfigDict,
    split: str,
    *,
    batch_size: int,
    num_segments: int,
    seed: int,
    protocol: str | None = None,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
) -> Loader:
    """Creates the per-host loader of a split.

    Args:
      cfg: data options (`default_config`).
      split: 'train' (random clips, shuffled, repeated `num_epochs` times or forever) or
        'val'/'test' (every example once over all hosts, last batch padded).
      batch_size: examples per batch on this host.
      num_segments: frames per clip (T).
      seed: shuffling and augmentation seed.
      protocol: evaluation views: 'efficient' (1 clip x centre crop), 'accuracy' (10 clips x 3
        crops) or None (cfg.test_clips x cfg.test_crops).
      num_epochs: training epochs (None: forever).
      shard_index: this host's shard (default jax.process_index()).
      shard_count: number of shards (default jax.process_count()).

    Returns:
      A `Loader`. Training batches: `video` uint8 (B, T, H, W, 3), `label` int32 (B,).
      Evaluation batches: `video` uint8 (B, V, T, H, W, 3), `label` int32 (B,), `mask` bool (B,)
      (False on padding and skipped bad examples), `index` int32 (B,) (-1 on padding).
    """
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    train = split == "train"
    on_error = cfg.on_error or ("skip" if train else "raise")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"data.on_error must be 'raise' or 'skip', got '{on_error}'")
    source, num_classes = build_source(cfg, split, on_error)
    if cfg.num_classes is not None and num_classes is not None and cfg.num_classes != num_classes:
        raise ValueError(f"data.num_classes={cfg.num_classes} but the dataset has {num_classes}")
    num_classes = cfg.num_classes or num_classes
    if num_classes is None:
        raise ValueError(f"set data.num_classes for source '{cfg.source}'")
    common = {
        "source": source,
        "num_classes": num_classes,
        "num_segments": num_segments,
        "image_size": cfg.image_size,
        "short_side": cfg.short_side,
        "dense": cfg.dense_sampling,
        "on_error": on_error,
    }
    num_examples = len(source)
    if train:
        per_host = num_examples // shard_count
        if per_host < batch_size:
            raise ValueError(
                f"{num_examples} examples over {shard_count} hosts is less than a batch of "
                f"{batch_size}"
            )
        reader = TrainReader(
            **common,
            scales=tuple(cfg.scales),
            max_distort=cfg.max_distort,
            flip=cfg.flip,
            flip_labels=_flip_labels(cfg),
        )
        host_seed = int(np.random.SeedSequence([seed, shard_index]).generate_state(1)[0])
        ds = grain.MapDataset.range(shard_index * per_host, (shard_index + 1) * per_host)
        ds = ds.shuffle(seed=seed).repeat(num_epochs).random_map(reader, seed=host_seed)
        ds = ds.batch(batch_size, drop_remainder=True)
        num_batches = per_host // batch_size
    else:
        clips, crops, crop_size = eval_views(cfg, protocol)
        if cfg.test_clip_sampling not in ("random", "fixed"):
            raise ValueError(
                "data.test_clip_sampling must be 'random' or 'fixed', "
                f"got '{cfg.test_clip_sampling}'"
            )
        reader = EvalReader(
            **common,
            num_clips=clips,
            num_crops=crops,
            crop_size=crop_size,
            random_clips=cfg.test_clip_sampling == "random",
            seed=seed,
        )
        host_indices = list(range(shard_index, num_examples, shard_count))
        per_host = math.ceil(num_examples / shard_count)
        num_batches = math.ceil(per_host / batch_size)
        padded = host_indices + [-1] * (num_batches * batch_size - len(host_indices))
        ds = grain.MapDataset.source(padded).map(reader).batch(batch_size)
    ds = read_in_workers(ds, cfg.num_workers, cfg.worker_buffer_size)
    ds = ds.map(BadInputMonitor(cfg.max_bad_fraction * per_host, cfg.max_bad_fraction))
    return Loader(num_examples, num_classes, num_batches, ds)
