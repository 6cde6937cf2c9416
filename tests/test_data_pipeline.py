"""The loader contract on the synthetic source: layout, sharding, padding, determinism, resume."""

import grain
import jax.numpy as jnp
import numpy as np
import pytest

from tea_jax.data import create_loader, normalize, synthetic, synthetic_config

OPTIONS = {
    "seed": 1,
    "num_train": 24,
    "num_val": 10,
    "size": 32,
    "min_frames": 10,
    "max_frames": 12,
}


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory):
    cfg = synthetic_config(str(tmp_path_factory.mktemp("synthetic") / "data"))
    cfg.synthetic.update(OPTIONS)
    cfg.image_size = cfg.short_side = 32
    cfg.num_workers = 0
    synthetic.ensure(cfg.root, synthetic.SyntheticOptions(**cfg.synthetic), workers=1)
    return cfg


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_train_batches(data_cfg):
    loader = create_loader(data_cfg, "train", batch_size=4, num_segments=4, seed=0)
    assert (loader.num_examples, loader.num_classes, loader.num_batches) == (24, 8, 6)
    batch = next(iter(loader))
    assert set(batch) == {"video", "label"}
    assert batch["video"].shape == (4, 4, 32, 32, 3) and batch["video"].dtype == np.uint8
    assert batch["label"].dtype == np.int32 and np.all((batch["label"] >= 0) & (batch["label"] < 8))


def test_train_epoch_covers_host_shard(data_cfg):
    cfg = data_cfg.copy_and_resolve_references()
    cfg.flip = False
    labels = []
    for shard in range(2):
        loader = create_loader(
            cfg, "train", batch_size=4, num_segments=2, seed=0, shard_index=shard, shard_count=2
        )
        labels += [b["label"] for b in _take(iter(loader), loader.num_batches)]
    assert sorted(np.concatenate(labels)) == sorted(list(range(8)) * 3)


def test_train_is_deterministic_and_seeded(data_cfg):
    def first(seed):
        loader = create_loader(data_cfg, "train", batch_size=4, num_segments=4, seed=seed)
        return next(iter(loader))

    a, b, c = first(0), first(0), first(1)
    np.testing.assert_array_equal(a["video"], b["video"])
    assert np.any(a["video"] != c["video"])


def test_iterator_state_resumes_exactly(data_cfg):
    loader = create_loader(data_cfg, "train", batch_size=4, num_segments=4, seed=0)
    iterator = iter(loader)
    _take(iterator, 7)  # crosses an epoch boundary
    state = iterator.get_state()
    expected = _take(iterator, 3)
    resumed = iter(create_loader(data_cfg, "train", batch_size=4, num_segments=4, seed=0))
    resumed.set_state(state)
    for a, b in zip(expected, _take(resumed, 3), strict=True):
        np.testing.assert_array_equal(a["video"], b["video"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_worker_processes_match_and_checkpoint(data_cfg, tmp_path):
    import orbax.checkpoint as ocp

    cfg = data_cfg.copy_and_resolve_references()
    cfg.num_workers = 1
    loader = create_loader(cfg, "train", batch_size=4, num_segments=4, seed=0)
    iterator = iter(loader)
    _take(iterator, 2)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
        manager.wait_until_finished()
        expected = _take(iterator, 2)
        resumed = iter(create_loader(cfg, "train", batch_size=4, num_segments=4, seed=0))
        manager.restore(
            1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed))
        )
    got = _take(resumed, 2)
    in_process = _take(
        iter(create_loader(data_cfg, "train", batch_size=4, num_segments=4, seed=0)), 4
    )
    for a, b, c in zip(expected, got, in_process[2:], strict=True):
        np.testing.assert_array_equal(a["video"], b["video"])
        np.testing.assert_array_equal(a["video"], c["video"])
    iterator.close()
    resumed.close()


def test_eval_every_example_once_over_hosts(data_cfg):
    seen, batches = [], []
    for shard in range(3):
        loader = create_loader(
            data_cfg, "val", batch_size=3, num_segments=4, seed=0, shard_index=shard, shard_count=3
        )
        host = list(loader)
        assert len(host) == loader.num_batches == 2
        batches += host
        for batch in host:
            assert batch["video"].shape == (3, 1, 4, 32, 32, 3)
            assert np.all(batch["index"][~batch["mask"]] == -1)
            seen += list(batch["index"][batch["mask"]])
    assert sorted(seen) == list(range(10))
    labels = {i: y for b in batches for i, y in zip(b["index"], b["label"], strict=True) if i >= 0}
    assert [labels[i] for i in range(10)] == [(i // 2) % 4 * 2 + i % 2 for i in range(10)]


def test_eval_protocols(data_cfg):
    accuracy = next(
        iter(
            create_loader(
                data_cfg, "val", batch_size=2, num_segments=4, seed=0, protocol="accuracy"
            )
        )
    )
    efficient = next(
        iter(
            create_loader(
                data_cfg, "test", batch_size=2, num_segments=4, seed=0, protocol="efficient"
            )
        )
    )
    assert accuracy["video"].shape == (2, 30, 4, 32, 32, 3)
    assert efficient["video"].shape == (2, 1, 4, 32, 32, 3)
    # Square frames: the three crops coincide with the centre crop; clip 4 of 10 ~ the centre.
    views = accuracy["video"].reshape(2, 10, 3, 4, 32, 32, 3)
    np.testing.assert_array_equal(views[:, :, 0], views[:, :, 1])
    assert np.abs(views[:, 4, 1].astype(int) - efficient["video"][:, 0]).mean() < 30


def test_normalize():
    video = jnp.full((1, 2, 2, 2, 3), 255, jnp.uint8).at[..., 1].set(0)
    out = normalize(video)
    np.testing.assert_allclose(
        out[0, 0, 0, 0], [(1 - 0.485) / 0.229, -0.456 / 0.224, (1 - 0.406) / 0.225], rtol=1e-5
    )
    assert normalize(video, jnp.bfloat16).dtype == jnp.bfloat16
