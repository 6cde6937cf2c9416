"""A tiny in-memory loader following the ``tea_jax.data.create_loader`` contract, for the tests.

Videos are deterministic functions of their index (a class-dependent colour plus noise), so
two runs, or two sharding layouts, see the same pixels.
"""

import dataclasses
import time

import grain
import jax
import numpy as np

NUM_CLASSES = 4


def fake_video(index: int, num_segments: int, size: int) -> tuple[np.ndarray, int]:
    """(T, H, W, 3) uint8 video and label of example ``index``."""
    label = index % NUM_CLASSES
    rng = np.random.default_rng(index)
    video = rng.integers(0, 64, (num_segments, size, size, 3), dtype=np.uint8)
    video[..., label % 3] += np.uint8(100 + 40 * (label // 3))
    return video, label


def _stack(examples):
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


@dataclasses.dataclass
class FakeLoader:
    """``create_loader``'s result: ``num_examples``, ``num_classes`` and a grain iterator."""

    dataset: grain.IterDataset
    num_examples: int
    num_classes: int = NUM_CLASSES

    def __iter__(self):
        return iter(self.dataset)


def create_loader(
    cfg,
    split,
    *,
    batch_size,
    num_segments,
    seed,
    protocol=None,
    num_epochs=None,
    shard_index=None,
    shard_count=None,
):
    """Mimics ``tea_jax.data.create_loader`` on ``cfg.num_train`` / ``cfg.num_val`` fake videos.

    ``cfg.delay_s`` (optional) slows every training example down, to leave time for signals.
    """
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    size = cfg.image_size
    if split == "train":

        def make(i):
            time.sleep(cfg.get("delay_s", 0.0))
            video, label = fake_video(int(i), num_segments, size)
            return {"video": video, "label": np.int32(label)}

        # Host h takes rows [h * B, (h + 1) * B) of every global batch, so the global batch is
        # the same, row by row, for any number of hosts (dropout masks depend on the row).
        ds = grain.MapDataset.range(cfg.num_train).shuffle(seed=seed).repeat(num_epochs)
        ds = ds.batch(batch_size * shard_count, drop_remainder=True)
        ds = ds.map(lambda rows: rows[shard_index * batch_size : (shard_index + 1) * batch_size])
        ds = ds.map(lambda rows: [make(i) for i in rows]).map(_stack)
        return FakeLoader(ds.to_iter_dataset(), cfg.num_train)

    views = {"efficient": 1, "accuracy": 30}.get(protocol, cfg.test_clips * cfg.test_crops)
    num = cfg.num_val
    per_host = -(-num // shard_count)
    padded = -(-per_host // batch_size) * batch_size

    def make_eval(position):
        i = shard_index + shard_count * int(position)
        valid = i < num
        video, label = fake_video(i if valid else 0, num_segments, size)
        clips = np.stack([np.roll(video, v, axis=2) for v in range(views)])
        return {
            "video": clips,
            "label": np.int32(label),
            "mask": np.bool_(valid),
            "index": np.int32(i if valid else -1),
        }

    ds = grain.MapDataset.range(padded).map(make_eval).batch(batch_size)
    return FakeLoader(ds.to_iter_dataset(), num)
