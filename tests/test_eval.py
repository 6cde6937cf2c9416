"""Evaluation: view averaging, each video counted once, metrics and reports."""

import json
import os

import fake_loader as fakes
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tea_jax import data as data_lib
from tea_jax import inference
from tea_jax.train import evaluation, metrics, sharding


class PixelMeanClassifier(nn.Module):
    """logits = mean colour of the clip @ W: every view gives different logits."""

    num_classes: int = 5

    @nn.compact
    def __call__(self, video, train=False):
        return nn.Dense(self.num_classes)(video.mean(axis=(1, 2, 3)))


def _model_and_variables(num_classes=5):
    model = PixelMeanClassifier(num_classes)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 2, 4, 4, 3)))
    return model, variables


@pytest.mark.parametrize("average", ["softmax", "logits"])
def test_accuracy_protocol_averages_exactly_30_views(average):
    model, variables = _model_and_variables()
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (3, 30, 2, 4, 4, 3), dtype=np.uint8)
    scores = inference.score_views(variables, jnp.asarray(video), model=model, average=average)
    per_view = np.stack(
        [
            np.asarray(model.apply(variables, data_lib.normalize(jnp.asarray(video[:, v]))))
            for v in range(30)
        ],
        axis=1,
    )
    if average == "softmax":
        per_view = np.asarray(jax.nn.softmax(per_view, axis=-1))
    np.testing.assert_allclose(scores, per_view.mean(axis=1), rtol=1e-5, atol=1e-6)
    # Every one of the 30 views contributes 1/30 of the average.
    without_last = per_view[:, :29].mean(axis=1)
    assert not np.allclose(scores, without_last, atol=1e-6)


def test_views_are_combined_by_averaging_raw_logits_by_default():
    """The released test_models.py averages raw logits; it never passes --softmax."""
    import configs.default

    assert configs.default.get_config().score_average == "logits"
    model, variables = _model_and_variables()
    video = np.random.default_rng(0).integers(0, 256, (2, 3, 2, 4, 4, 3), dtype=np.uint8)
    logits = [
        model.apply(variables, data_lib.normalize(jnp.asarray(video[:, v]))) for v in range(3)
    ]
    scores = inference.score_views(variables, jnp.asarray(video), model=model)
    np.testing.assert_allclose(scores, np.mean(logits, axis=0), rtol=1e-5, atol=1e-6)


def _host_batches(num_examples, num_hosts, batch_size, num_classes, rng):
    """Per-host padded batches of a strided split, as the data contract describes."""
    per_host = -(-num_examples // num_hosts)
    padded = -(-per_host // batch_size) * batch_size
    for host in range(num_hosts):
        positions = np.arange(padded)
        index = host + num_hosts * positions
        mask = index < num_examples
        index = np.where(mask, index, -1)
        for start in range(0, padded, batch_size):
            sl = slice(start, start + batch_size)
            yield (
                rng.random((batch_size, num_classes)),
                np.where(mask[sl], index[sl] % num_classes, 0),
                index[sl],
                mask[sl],
            )


def test_collector_counts_each_video_once_over_hosts_and_uneven_batches():
    rng = np.random.default_rng(1)
    collector = metrics.ScoreCollector(num_examples=23, num_classes=4)
    batches = list(_host_batches(23, num_hosts=3, batch_size=3, num_classes=4, rng=rng))
    for batch in batches:
        collector.add(*batch)
    scores, labels, index = collector.result()
    np.testing.assert_array_equal(index, np.arange(23))
    np.testing.assert_array_equal(labels, np.arange(23) % 4)
    assert scores.shape == (23, 4)

    duplicated = metrics.ScoreCollector(num_examples=23, num_classes=4)
    for batch in [*batches, batches[0]]:
        duplicated.add(*batch)
    with pytest.raises(ValueError, match="more than once"):
        duplicated.result()

    missing = metrics.ScoreCollector(num_examples=23, num_classes=4)
    for batch in batches[:-1]:
        missing.add(*batch)
    with pytest.raises(ValueError, match=r"saw 2[0-2] videos but the split has 23"):
        missing.result()


def test_classification_metrics_by_hand():
    scores = np.array(
        [
            [0.7, 0.1, 0.1, 0.1],  # label 0, right
            [0.1, 0.6, 0.2, 0.1],  # label 0, wrong (2nd)
            [0.1, 0.2, 0.6, 0.1],  # label 2, right
            [0.5, 0.1, 0.1, 0.3],  # label 3, wrong (2nd)
            [0.1, 0.1, 0.1, 0.7],  # label 3, right
        ]
    )
    labels = np.array([0, 0, 2, 3, 3])
    m = metrics.classification_metrics(scores, labels)
    assert m["top1"] == pytest.approx(3 / 5)
    assert m["top5"] == 1.0
    assert m["per_class_accuracy"] == [0.5, None, 1.0, 0.5]
    assert m["mean_class_accuracy"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    expected_nll = -np.log([0.7, 0.1, 0.6, 0.3, 0.7]).mean()
    assert m["loss"] == pytest.approx(expected_nll, rel=1e-5)
    assert m["confusion"][0].tolist() == [1, 1, 0, 0] and m["confusion"][3].tolist() == [1, 0, 0, 1]


def _fake_cfg(num_val):
    return ml_collections.ConfigDict(
        {"image_size": 4, "num_train": 8, "num_val": num_val, "test_clips": 2, "test_crops": 1}
    )


def test_evaluate_split_with_padding_matches_direct_scores(tmp_path):
    model, variables = _model_and_variables(fakes.NUM_CLASSES)
    mesh = sharding.create_mesh()
    loader = fakes.create_loader(
        _fake_cfg(7), "val", batch_size=4, num_segments=2, seed=0, protocol="config"
    )
    eval_fn = evaluation.make_eval_fn(model, mesh)
    results = evaluation.evaluate(eval_fn, sharding.replicate(variables, mesh), loader, mesh)
    assert results["num_videos"] == 7
    np.testing.assert_array_equal(results["index"], np.arange(7))
    for i in range(7):
        video, label = fakes.fake_video(i, 2, 4)
        views = np.stack([np.roll(video, v, axis=2) for v in range(2)])[None]
        direct = inference.score_views(variables, jnp.asarray(views), model=model)
        np.testing.assert_allclose(results["scores"][i], direct[0], rtol=1e-5, atol=1e-6)
        assert results["labels"][i] == label

    names = [f"class {c}" for c in range(fakes.NUM_CLASSES)]
    summary = evaluation.write_report(results, str(tmp_path), "config", class_names=names)
    with open(tmp_path / "eval_config.json") as f:
        assert json.load(f)["top1"] == summary["top1"] == results["top1"]
    assert os.path.getsize(tmp_path / "confusion_config.png") > 0
    with open(tmp_path / "predictions_config.jsonl") as f:
        lines = [json.loads(line) for line in f]
    assert [r["video"] for r in lines] == [str(i) for i in range(7)]
    assert all(len(r["top5"]) == fakes.NUM_CLASSES and r["label"] in names for r in lines)
    assert "config" in evaluation.format_table([summary])
