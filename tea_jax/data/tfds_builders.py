"""TFDS builders for UCF101, HMDB51, Kinetics-400 and Something-Something V1/V2 (no TensorFlow).

They read the files downloaded by hand from `manual_dir` (layouts in `tea_jax.data.datasets`) and
write ArrayRecord with TensorFlow-free features: `frames`, a sequence of JPEG bytes (decoded only
for the sampled frames), `label` and `id`. Read with `tfds.data_source`, e.g. through
`create_loader` with `source='tfds'` and `tfds_name='ucf101_jpeg/split1'`.

  python -m tea_jax.data.prepare tfds --dataset ucf101 --fold 1 --manual_dir ~/ucf101 \\
      --data_dir ~/tensorflow_datasets
"""

import functools
import logging
import multiprocessing
import os
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from tea_jax.data import datasets
from tea_jax.data.config import split_candidates
from tea_jax.data.errors import DataError
from tea_jax.data.listfiles import Entry
from tea_jax.data.sources import jpeg_frames


class VideoConfig(tfds.core.BuilderConfig):
    """Fold (UCF101/HMDB51 split), frame resizing and JPEG quality of a build."""

    def __init__(self, *, fold: int = 1, short_side: int | None = 256, quality: int = 90, **kwargs):
        super().__init__(version=tfds.core.Version("1.0.0"), **kwargs)
        self.fold, self.short_side, self.quality = fold, short_side, quality


def _encode_example(row, root: str, template: str | None, short_side: int | None, quality: int):
    """(key, example, None) of one annotated video, or (key, None, error) if it cannot be read.

    `template` names the frames of frame folders; None: the rows are video files.
    """
    path, label = row
    full = os.path.join(root, path)
    try:
        num_frames = datasets.count_frames(full) if template else None
        frames = jpeg_frames(Entry(full, label, num_frames), template, short_side, quality)
    except (DataError, OSError) as e:
        return path, None, str(e)
    return path, {"frames": frames, "label": label, "id": path}, None


class _VideoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    DATASET = ""
    MANUAL_DOWNLOAD_INSTRUCTIONS = "See the layouts in tea_jax/data/datasets.py."
    BUILDER_CONFIGS: ClassVar[list[VideoConfig]] = [VideoConfig(name="default")]
    WORKERS = os.cpu_count() or 1
    # Given, so that TFDS does not look the file up through the optional importlib_resources.
    code_path = epath.Path(__file__)

    def _annotations(self, manual_dir) -> datasets.Annotations:
        return datasets.load(self.DATASET, os.fspath(manual_dir), self.builder_config.fold)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.DATASET} videos as sequences of JPEG frames.",
            features=tfds.features.FeaturesDict(
                {
                    "frames": tfds.features.Sequence(
                        tfds.features.Tensor(shape=(), dtype=np.object_)
                    ),
                    "label": tfds.features.ClassLabel(
                        num_classes=datasets.NUM_CLASSES[self.DATASET]
                    ),
                    "id": tfds.features.Text(),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        annotations = self._annotations(dl_manager.manual_dir)
        return {
            split: self._generate_examples(annotations, rows)
            for split, rows in annotations.splits.items()
            if rows
        }

    def _generate_examples(self, annotations, rows):
        config = self.builder_config
        encode = functools.partial(
            _encode_example,
            root=annotations.root,
            template=annotations.template if annotations.frames else None,
            short_side=config.short_side,
            quality=config.quality,
        )
        if self.WORKERS > 1:
            with multiprocessing.get_context("spawn").Pool(self.WORKERS) as pool:
                yield from _valid(pool.imap_unordered(encode, rows, chunksize=4))
        else:
            yield from _valid(map(encode, rows))


def _valid(results):
    for key, example, error in results:
        if error:
            logging.warning("skipped %s", error)
        else:
            yield key, example


def _folds(description: str) -> list[VideoConfig]:
    return [
        VideoConfig(name=f"split{k}", fold=k, description=f"{description} split {k}")
        for k in (1, 2, 3)
    ]


class Ucf101Jpeg(_VideoBuilder):
    """UCF101 (101 classes), official splits 1-3."""

    DATASET = "ucf101"
    BUILDER_CONFIGS = _folds("UCF101 official")


class Hmdb51Jpeg(_VideoBuilder):
    """HMDB51 (51 classes), official splits 1-3."""

    DATASET = "hmdb51"
    BUILDER_CONFIGS = _folds("HMDB51 official")


class Kinetics400Jpeg(_VideoBuilder):
    """Kinetics-400: train, val and (when labelled) test."""

    DATASET = "kinetics400"


class SomethingSomethingV1Jpeg(_VideoBuilder):
    """Something-Something V1 (174 classes) from its JPEG frame folders; frames kept as they are."""

    DATASET = "something_something_v1"
    BUILDER_CONFIGS: ClassVar[list[VideoConfig]] = [VideoConfig(name="default", short_side=None)]


class SomethingSomethingV2Jpeg(_VideoBuilder):
    """Something-Something V2 (174 classes) from its webm videos."""

    DATASET = "something_something_v2"


BUILDERS = {
    "ucf101": Ucf101Jpeg,
    "hmdb51": Hmdb51Jpeg,
    "kinetics400": Kinetics400Jpeg,
    "something_something_v1": SomethingSomethingV1Jpeg,
    "something_something_v2": SomethingSomethingV2Jpeg,
}


def resolve(name: str, split: str, data_dir: str | None) -> tuple[str, str, int]:
    """(name, TFDS split, num_classes) of a prepared dataset for loader split `split`."""
    if not name:
        raise ValueError("set data.tfds_name, e.g. 'ucf101_jpeg/split1'")
    info = tfds.builder(name, data_dir=data_dir).info
    for candidate in split_candidates(split):
        if candidate in info.splits:
            return name, candidate, info.features["label"].num_classes
    raise ValueError(f"{name} has splits {list(info.splits)}, none for '{split}'")


def build(
    dataset: str, manual_dir: str, data_dir: str | None, fold: int = 1, workers: int | None = None
) -> str:
    """Prepares `dataset` (a `datasets.NAMES` entry); returns its TFDS name for `tfds_name`."""
    builder_class = BUILDERS[dataset]
    config = f"split{fold}" if dataset in datasets.FOLDS else None
    builder = builder_class(data_dir=data_dir, config=config, file_format="array_record")
    if workers:
        builder.WORKERS = workers
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=download_config)
    return builder.info.full_name.rsplit("/", 1)[0]
