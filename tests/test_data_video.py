"""Video files: exact frame access by seeking or sequential decoding, and class-folder layouts."""

import os

import av
import numpy as np
import pytest

from tea_jax.data import create_loader, default_config
from tea_jax.data.video import VideoFile, write_video


def _coded(num_frames, size=32):
    """Frame f is grey 4 * f: decoded values identify the frame."""
    return np.stack([np.full((size, size, 3), 4 * f, np.uint8) for f in range(num_frames)])


def _frame_numbers(frames):
    return np.round(frames.reshape(len(frames), -1).mean(1) / 4).astype(int)


class _CountingContainer:
    """Forwards to a PyAV container, counting seeks."""

    def __init__(self, container):
        self._container, self.seeks = container, 0

    def seek(self, *args, **kwargs):
        self.seeks += 1
        return self._container.seek(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._container, name)


def _encode(path, frames, **options):
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.options = {"crf": "10", "x264-params": "scenecut=0", **options}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize(("gop", "max_seeks"), [(4, 8), (250, 1)])
def test_reads_exact_frames_seeking_only_when_cheaper(tmp_path, gop, max_seeks):
    path = str(tmp_path / "v.mp4")
    _encode(path, _coded(60), g=str(gop), bf="0")
    wanted = [50, 3, 3, 17, 30, 44, 59, 10]
    with VideoFile(path) as video:
        counter = video._container = _CountingContainer(video._container)
        frames = video.read(wanted)
    assert video.num_frames == 60
    np.testing.assert_array_equal(_frame_numbers(frames), wanted)
    assert 1 <= counter.seeks <= max_seeks
    if gop == 4:
        assert counter.seeks >= 5


def test_b_frames(tmp_path):
    path = str(tmp_path / "b.mp4")
    _encode(path, _coded(40), g="12", bf="3")
    with VideoFile(path) as video:
        np.testing.assert_array_equal(_frame_numbers(video.read(range(40))), range(40))
    with VideoFile(path) as video:
        np.testing.assert_array_equal(_frame_numbers(video.read([39, 13, 26, 0])), [39, 13, 26, 0])


def test_class_folders(tmp_path):
    for split, count in (("train", 2), ("val", 1)):
        for name in ("jumping", "archery"):
            os.makedirs(tmp_path / split / name)
            for i in range(count):
                write_video(str(tmp_path / split / name / f"{i}.mp4"), _coded(12))
    cfg = default_config()
    cfg.update(source="videos", root=str(tmp_path), num_workers=0, image_size=32, short_side=32)
    train = create_loader(cfg, "train", batch_size=4, num_segments=4, seed=0)
    assert (train.num_examples, train.num_classes) == (4, 2)
    assert sorted(next(iter(train))["label"]) == [0, 0, 1, 1]
    test = create_loader(cfg, "test", batch_size=2, num_segments=4, seed=0)
    batch = next(iter(test))
    assert test.num_examples == 2 and list(batch["label"]) == [0, 1]  # archery < jumping
    np.testing.assert_array_equal(_frame_numbers(batch["video"][0, 0]), [1, 4, 7, 10])
