"""Model checkpoints: save/load round trip, validation at load, `init_from` between models.

Variables are random arrays of the models' abstract shapes, so nothing here compiles a network.
"""

import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tea_jax
from tea_jax import model_files

SMALL = {"stage_sizes": (1, 2, 1, 1), "width_multiplier": 0.25}


def random_variables(name, seed=0, num_segments=4, **options):
    """(options, variables) of a registry model, every array random."""
    options = {"num_classes": 6, "num_segments": num_segments, **SMALL, **options}
    model = tea_jax.create_model(name, **options)
    rng = np.random.default_rng(seed)
    variables = jax.tree.map(
        lambda s: rng.normal(size=s.shape).astype(s.dtype),
        model_files.abstract_variables(model, num_segments),
    )
    return options, variables


def saved(tmp_path, name, **options):
    options, variables = random_variables(name, **options)
    model_files.save_model(tmp_path / name, name, options, variables)
    return tmp_path / name, variables


def flatten(tree):
    return flax.traverse_util.flatten_dict(tree, sep="/")


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_round_trip(tmp_path):
    options, variables = random_variables("tea50", dtype=jnp.bfloat16, temporal_stages=(2, 3))
    model_files.save_model(tmp_path, "tea50", options, variables)

    info = json.loads((tmp_path / model_files.MODEL_FILE).read_text())
    assert info["name"] == "tea50"
    assert info["options"]["dtype"] == "bfloat16"
    assert info["options"]["stage_sizes"] == [1, 2, 1, 1]

    model, restored = tea_jax.load_model(tmp_path)
    assert model.num_classes == 6 and model.num_segments == 4
    assert model.stage_sizes == (1, 2, 1, 1) and model.temporal_stages == (2, 3)
    assert jnp.dtype(model.dtype) == jnp.bfloat16
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(restored))
    assert_trees_equal(restored, variables)


def test_save_refuses_bad_input(tmp_path):
    options, variables = random_variables("tsn_res2net50")
    with pytest.raises(ValueError, match="lack"):
        model_files.save_model(tmp_path / "a", "tsn_res2net50", {"num_classes": 6}, variables)
    with pytest.raises(ValueError, match="unknown model"):
        model_files.save_model(tmp_path / "b", "tea51", options, variables)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    model_files.save_model(tmp_path / "c", "tsn_res2net50", options, variables)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        model_files.save_model(tmp_path / "c", "tsn_res2net50", options, variables)


def test_load_rejects_what_does_not_fit(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a tea_jax model checkpoint"):
        model_files.load_model(tmp_path)
    directory, _ = saved(tmp_path, "tsn_res2net50")
    info = json.loads((directory / model_files.MODEL_FILE).read_text())
    info["options"]["stage_sizes"] = [1, 1, 1, 1]
    (directory / model_files.MODEL_FILE).write_text(json.dumps(info))
    with pytest.raises(ValueError, match="unexpected params/layer2_1/conv3/kernel"):
        model_files.load_model(directory)
    (directory / model_files.MODEL_FILE).write_text("{")
    with pytest.raises(ValueError, match="not a valid model description"):
        model_files.load_model(directory)


def test_init_tea50_from_2d_res2net(tmp_path, capsys):
    source, source_variables = saved(tmp_path, "tsn_res2net50", num_segments=1)
    _, fresh = random_variables("tea50", seed=1, num_classes=400)
    variables, summary = model_files.init_from(fresh, source, model_name="tea50")

    kinds = {p.split("/")[2] if p.count("/") > 2 else p for p in summary.new}
    assert kinds == {"me", "mta", "params/fc/kernel", "params/fc/bias"}
    assert all("/temporal_" in p for p in summary.new if "/mta/" in p)
    assert set(summary.dropped) == {"params/fc/kernel", "params/fc/bias"}
    flat_source = flatten(source_variables)
    flat_out, flat_fresh = flatten(variables), flatten(fresh)
    for path in summary.loaded:
        np.testing.assert_array_equal(flat_out[path], flat_source[path])
    for path in summary.new:
        np.testing.assert_array_equal(flat_out[path], flat_fresh[path])
    assert len(summary.loaded) + len(summary.new) == len(flat_fresh)
    assert str(summary) in capsys.readouterr().out
    assert "layer*/me/bn_expand  x5" in str(summary)


def test_init_keeps_classifier_of_same_class_count_and_drops_temporal_modules(tmp_path):
    source, source_variables = saved(tmp_path, "tea50")
    _, fresh = random_variables("tsn_res2net50", seed=1)
    variables, summary = model_files.init_from(fresh, source, model_name="tsn_res2net50")
    assert summary.new == ()
    assert {p.split("/")[2] for p in summary.dropped} == {"me", "mta"}
    np.testing.assert_array_equal(
        variables["params"]["fc"]["kernel"], source_variables["params"]["fc"]["kernel"]
    )


def test_init_can_leave_a_classifier_of_the_same_shape_fresh(tmp_path):
    source, source_variables = saved(tmp_path, "tea50")
    _, fresh = random_variables("tea50", seed=1)
    variables, summary = model_files.init_from(
        fresh, source, model_name="tea50", load_classifier=False
    )
    assert set(summary.new) == set(summary.dropped) == {"params/fc/kernel", "params/fc/bias"}
    np.testing.assert_array_equal(variables["params"]["fc"]["bias"], fresh["params"]["fc"]["bias"])
    np.testing.assert_array_equal(
        variables["params"]["conv1"]["kernel"], source_variables["params"]["conv1"]["kernel"]
    )


@pytest.mark.parametrize(
    "setting,source_segments,source_classes,expected",
    [
        ("auto", 4, 6, False),  # continuing on the same classes
        ("auto", 4, 9, True),  # another dataset
        ("auto", 1, 6, True),  # an image classifier: TSN replaces it
        ("true", 4, 6, True),
        ("false", 4, 6, False),
        ("false", 4, 9, "has 9 classes"),
        ("maybe", 4, 6, "expected 'auto'"),
    ],
)
def test_new_classifier_rule(tmp_path, setting, source_segments, source_classes, expected):
    import ml_collections

    from tea_jax.train import model_setup

    source, _ = saved(
        tmp_path, "tsn_resnet50", num_segments=source_segments, num_classes=source_classes
    )
    config = ml_collections.ConfigDict({"new_classifier": setting, "init_from": str(source)})
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            model_setup.new_classifier(config, num_classes=6)
    else:
        assert model_setup.new_classifier(config, num_classes=6) is expected
    config.init_from = ""
    if setting == "false":
        with pytest.raises(ValueError, match="init_from, which is empty"):
            model_setup.new_classifier(config, num_classes=6)
    elif setting != "maybe":
        assert model_setup.new_classifier(config, num_classes=6)


@pytest.mark.parametrize("name", ["r2plus1d_resnet50", "se50", "me50"])
def test_init_resnet_baselines_from_2d_resnet(tmp_path, name):
    source, _ = saved(tmp_path, "tsn_resnet50")
    _, fresh = random_variables(name, seed=1)
    _, summary = model_files.init_from(fresh, source, model_name=name)
    assert summary.dropped == ()
    assert {p.split("/")[2] for p in summary.new} <= {"temporal", "me", "se"}
    assert summary.new


def test_init_rejects_other_backbones(tmp_path):
    resnet, _ = saved(tmp_path, "tsn_resnet50")
    _, fresh = random_variables("tea50", seed=1)
    with pytest.raises(ValueError, match=r"layer1_0/conv2/kernel .* matches no parameter"):
        model_files.init_from(fresh, resnet, model_name="tea50")
    wide, _ = saved(tmp_path / "wide", "tsn_res2net50", width_multiplier=0.5)
    with pytest.raises(ValueError, match=r"shape of params/conv1/kernel: \(7, 7, 3, 32\)"):
        model_files.init_from(fresh, wide, model_name="tea50")
    deep, _ = saved(tmp_path / "deep", "tsn_res2net50", stage_sizes=(1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"layer2_1/conv1/kernel .* is not in the checkpoint"):
        model_files.init_from(fresh, deep, model_name="tea50")
