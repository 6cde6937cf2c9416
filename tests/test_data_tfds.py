"""A TFDS builder on a tiny fake UCF101 download, read back through tfds.data_source."""

import os
import sys

import numpy as np
import pytest

from tea_jax.data import create_loader, default_config
from tea_jax.data.prepare import main as prepare
from tea_jax.data.video import write_video

CLASSES = ("ApplyEyeMakeup", "Archery")


@pytest.fixture(scope="module")
def data_ucf101(tmp_path_factory):
    manual = tmp_path_factory.mktemp("ucf101")
    os.makedirs(manual / "ucfTrainTestlist")
    train, test = [], []
    for label, name in enumerate(CLASSES):
        os.makedirs(manual / "UCF-101" / name)
        for group in (1, 8):
            video = f"{name}/v_{name}_g{group:02d}_c01.avi"
            frames = np.full((12, 24, 32, 3), 100 * label + 10 * group, np.uint8)
            write_video(str(manual / "UCF-101" / video), frames)
            (train if group == 8 else test).append(video)
    (manual / "ucfTrainTestlist" / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (manual / "ucfTrainTestlist" / "trainlist01.txt").write_text(
        "".join(f"{v} {CLASSES.index(v.split('/')[0]) + 1}\n" for v in train)
    )
    (manual / "ucfTrainTestlist" / "testlist01.txt").write_text("".join(f"{v}\n" for v in test))
    data_dir = manual / "tfds"
    prepare(
        [
            "tfds",
            "--dataset",
            "ucf101",
            "--manual_dir",
            str(manual),
            "--data_dir",
            str(data_dir),
            "--workers",
            "1",
        ]
    )
    return str(data_dir)


def test_builder_reads_manual_dir(data_ucf101):
    import tensorflow_datasets as tfds

    source = tfds.data_source("ucf101_jpeg/split1", split="test", data_dir=data_ucf101)
    examples = sorted((source[i] for i in range(len(source))), key=lambda e: e["label"])
    assert [e["label"] for e in examples] == [0, 1]
    assert examples[1]["id"] == b"Archery/v_Archery_g01_c01.avi"
    assert len(examples[0]["frames"]) == 12 and isinstance(examples[0]["frames"][0], bytes)
    assert "tensorflow" not in sys.modules


def test_loader_on_tfds(data_ucf101):
    cfg = default_config()
    cfg.update(
        source="tfds", tfds_name="ucf101_jpeg/split1", tfds_data_dir=data_ucf101, num_workers=0
    )
    cfg.update(image_size=24, short_side=24)
    train = create_loader(cfg, "train", batch_size=2, num_segments=4, seed=0)
    assert (train.num_examples, train.num_classes) == (2, 101)
    assert next(iter(train))["video"].shape == (2, 4, 24, 24, 3)
    val = create_loader(cfg, "val", batch_size=2, num_segments=4, seed=0)  # UCF101: val is test
    batch = next(iter(val))
    for video, label in zip(batch["video"], batch["label"], strict=True):
        assert abs(video.mean() - (100 * label + 10)) < 3  # group 1 clips are the test split
    assert "tensorflow" not in sys.modules
