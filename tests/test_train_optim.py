"""The optimizer recipe against hand-computed SGD steps."""

import re

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import tea_jax
from tea_jax.data import normalize
from tea_jax.train import optim


def _config(**overrides):
    config = ml_collections.ConfigDict(
        {
            "name": "sgd",
            "lr": 0.1,
            "lr_batch_size": 64,
            "momentum": 0.9,
            "nesterov": False,
            "b1": 0.9,
            "b2": 0.999,
            "eps": 1e-8,
            "weight_decay": 0.01,
            "schedule": "step",
            "lr_steps": (3, 4),
            "lr_decay": 0.1,
            "warmup_epochs": 0.0,
            "clip_norm": 1.0,
            "bias_lr_mult": 2.0,
            "bn_decay_mult": 0.0,
            "classifier_lr_mult": 5.0,
            "classifier_bias_lr_mult": 10.0,
        }
    )
    config.update(overrides)
    return config


def _params():
    return {
        "conv1": {"kernel": jnp.array([1.0, -2.0])},
        "bn1": {"scale": jnp.array([1.5]), "bias": jnp.array([0.5])},
        "layer1_0": {
            "conv1": {"kernel": jnp.array([0.3, 0.4])},
            "bn1": {"scale": jnp.array([2.0]), "bias": jnp.array([-1.0])},
            "mta": {"temporal_0": {"kernel": jnp.array([0.0, 1.0, 0.0])}},
            "downsample_bn": {"scale": jnp.array([1.0]), "bias": jnp.array([0.1])},
            "se": {"fc1": {"bias": jnp.array([0.2])}},
        },
        "fc": {"kernel": jnp.array([[0.5, -0.5]]), "bias": jnp.array([0.1, 0.2])},
    }


EXPECTED_GROUPS = {
    "conv1/kernel": "weight",
    "bn1/scale": "bn",
    "bn1/bias": "bn",
    "layer1_0/conv1/kernel": "weight",
    "layer1_0/bn1/scale": "bn",
    "layer1_0/bn1/bias": "bn",
    "layer1_0/mta/temporal_0/kernel": "weight",
    "layer1_0/downsample_bn/scale": "bn",
    "layer1_0/downsample_bn/bias": "bn",
    "layer1_0/se/fc1/bias": "bias",
    "fc/kernel": "fc_weight",
    "fc/bias": "fc_bias",
}


def _flat(tree):
    return flax.traverse_util.flatten_dict(tree, sep="/")


def test_param_groups():
    labels = _flat(optim.param_groups(_params()))
    assert labels == EXPECTED_GROUPS
    partial = _flat(optim.param_groups(_params(), partial_bn=True))
    for name, group in EXPECTED_GROUPS.items():
        frozen = group == "bn" and not name.startswith("bn1/")
        assert partial[name] == ("frozen" if frozen else group), name


def _grads(params, scale=1.0):
    flat = _flat(params)
    return flax.traverse_util.unflatten_dict(
        {k: scale * (i + 1) * jnp.ones_like(v) for i, (k, v) in enumerate(flat.items())}, sep="/"
    )


def _hand_sgd(params, grads_list, *, lr, new_classifier, partial_bn, clip=1.0, wd=0.01, mom=0.9):
    """PyTorch SGD with parameter groups and clip_grad_norm_, in numpy."""
    groups = _flat(optim.param_groups(params, partial_bn=partial_bn))
    mults = {
        "weight": (1, 1),
        "bias": (2, 0),
        "bn": (1, 0),
        "fc_weight": (5 if new_classifier else 1, 1),
        "fc_bias": (10 if new_classifier else 2, 0),
    }
    p = {k: np.asarray(v, np.float64) for k, v in _flat(params).items()}
    buf = {k: np.zeros_like(v) for k, v in p.items()}
    for grads in grads_list:
        g = {k: np.asarray(v, np.float64) for k, v in _flat(grads).items()}
        trainable = [k for k in p if groups[k] != "frozen"]
        norm = np.sqrt(sum((g[k] ** 2).sum() for k in trainable))
        factor = min(1.0, clip / norm)
        for k in trainable:
            lr_mult, decay_mult = mults[groups[k]]
            d = g[k] * factor + wd * decay_mult * p[k]
            buf[k] = mom * buf[k] + d
            p[k] = p[k] - lr * lr_mult * buf[k]
    return p


@pytest.mark.parametrize("new_classifier", [True, False])
@pytest.mark.parametrize("partial_bn", [False, True])
def test_sgd_steps_match_hand_computation(new_classifier, partial_bn):
    params = _params()
    config = _config()
    schedule = optim.create_schedule(
        config, global_batch_size=128, steps_per_epoch=10, total_steps=50
    )
    tx = optim.create_optimizer(
        config, params, schedule=schedule, new_classifier=new_classifier, partial_bn=partial_bn
    )
    grads_list = [_grads(params, 1.0), _grads(params, -0.01)]  # Clipped, then not clipped.
    state = tx.init(params)
    new = params
    for grads in grads_list:
        updates, state = tx.update(grads, state, new)
        new = jax.tree.map(lambda p, u: p + u, new, updates)
    expected = _hand_sgd(
        params, grads_list, lr=0.2, new_classifier=new_classifier, partial_bn=partial_bn
    )
    for k, v in _flat(new).items():
        np.testing.assert_allclose(v, expected[k], rtol=1e-5, atol=1e-7, err_msg=k)
    if partial_bn:
        np.testing.assert_array_equal(
            new["layer1_0"]["bn1"]["scale"], params["layer1_0"]["bn1"]["scale"]
        )
        assert not np.array_equal(new["bn1"]["scale"], params["bn1"]["scale"])


def test_clip_norm_ignores_frozen_parameters():
    params = _params()
    config = _config(weight_decay=0.0, momentum=0.0)
    schedule = optim.create_schedule(config, global_batch_size=64, steps_per_epoch=1, total_steps=1)
    tx = optim.create_optimizer(
        config, params, schedule=schedule, new_classifier=False, partial_bn=True
    )
    grads = jax.tree.map(jnp.zeros_like, params)
    grads["conv1"]["kernel"] = jnp.array([0.3, 0.4])  # Norm 0.5 < clip 1: not clipped.
    grads["layer1_0"]["bn1"]["scale"] = jnp.array([100.0])  # Frozen: must not count.
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["conv1"]["kernel"], [-0.03, -0.04], rtol=1e-6)
    assert float(updates["layer1_0"]["bn1"]["scale"][0]) == 0.0


def test_step_schedule_at_epoch_boundaries_and_batch_scaling():
    config = _config(lr_steps=(30, 40, 45))
    schedule = optim.create_schedule(
        config, global_batch_size=256, steps_per_epoch=10, total_steps=500
    )
    base = 0.1 * 256 / 64
    for step, expected in [
        (0, base),
        (299, base),
        (300, base / 10),
        (399, base / 10),
        (400, base / 100),
        (450, base / 1000),
        (499, base / 1000),
    ]:
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-6, err_msg=str(step))


def test_cosine_schedule_with_warmup():
    config = _config(schedule="cosine", warmup_epochs=1.0)
    schedule = optim.create_schedule(
        config, global_batch_size=64, steps_per_epoch=10, total_steps=100
    )
    assert float(schedule(0)) == pytest.approx(0.1 * 0.1 * np.cos(0) * 1.0, rel=1e-5)
    assert float(schedule(9)) == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * 9 / 100)), rel=1e-5)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="schedule"):
        optim.create_schedule(
            _config(schedule="linear"), global_batch_size=64, steps_per_epoch=1, total_steps=1
        )


def test_groups_of_a_registry_model():
    model = tea_jax.create_model(
        "tea50", num_classes=8, num_segments=4, stage_sizes=(1, 1, 1, 1), width_multiplier=0.25
    )
    video = jax.ShapeDtypeStruct((1, 4, 32, 32, 3), jnp.float32)
    key = jax.random.key(0)
    shapes = jax.eval_shape(
        lambda v: model.init({"params": key, "dropout": key}, v, train=False), video
    )
    labels = _flat(optim.param_groups(shapes["params"], partial_bn=True))
    counts = optim.count_groups(optim.param_groups(shapes["params"], partial_bn=True))
    assert labels["bn1/scale"] == "bn" and labels["fc/kernel"] == "fc_weight"
    for name, group in labels.items():
        if name.endswith("scale"):
            assert group in ("bn", "frozen"), name
        if "/me/conv_" in name or "/mta/temporal_" in name:
            assert group == ("bias" if name.endswith("bias") else "weight"), name
    assert counts["frozen"] > 0 and counts["bn"] == 2
    # Each BatchNorm of the model has running statistics beside its frozen/trained affine pair.
    stats = _flat(shapes["batch_stats"])
    assert {k.rsplit("/", 1)[0] for k in stats} == {
        k.rsplit("/", 1)[0] for k, g in labels.items() if g in ("bn", "frozen")
    }


def test_remat_settings_give_the_same_step():
    """Every ``remat`` setting gives the step without remat (loss, parameters, BatchNorm
    statistics); ``blocks`` holds one optimisation barrier per bottleneck, where its
    recomputation waits for the cotangent. The module's longest test: four compiles of a reduced
    TEA's training step."""
    from tea_jax.train import state as state_lib
    from tea_jax.train import step as step_lib

    model = tea_jax.create_model(
        "tea50",
        num_classes=3,
        num_segments=4,
        stage_sizes=(1, 1, 1, 1),
        width_multiplier=0.25,
        dropout_rate=0.0,
        bn_group_clips=2,
    )
    rng = np.random.default_rng(0)
    batch = {
        "video": jnp.asarray(rng.integers(0, 256, (4, 4, 32, 32, 3), dtype=np.uint8)),
        "label": jnp.asarray([0, 1, 2, 0], jnp.int32),
    }
    variables = model.init(jax.random.key(0), normalize(batch["video"]))
    config = _config()
    schedule = optim.create_schedule(config, global_batch_size=4, steps_per_epoch=1, total_steps=1)
    tx = optim.create_optimizer(config, variables["params"], schedule=schedule, new_classifier=True)
    state = state_lib.create_train_state(variables, tx)
    results, barriers = {}, {}
    for remat in ("", *step_lib.REMAT):

        def step(s, b, remat=remat):
            return step_lib.train_step(
                s, b, jax.random.key(1), model=model, tx=tx, schedule=schedule, remat=remat
            )

        jaxpr = str(jax.make_jaxpr(step)(state, batch))
        barriers[remat] = len(re.findall(r"= optimization_barrier\b", jaxpr))
        results[remat] = jax.jit(step)(state, batch)
    assert barriers[""] == 0 and barriers["blocks"] == 4
    ref_state, ref_metrics = results[""]
    assert not np.array_equal(
        ref_state.batch_stats["bn1"]["mean"], variables["batch_stats"]["bn1"]["mean"]
    )
    for remat in step_lib.REMAT:
        new, metrics = results[remat]
        np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-6)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
            (new.params, new.batch_stats),
            (ref_state.params, ref_state.batch_stats),
        )


def test_an_unknown_remat_setting_names_the_settings():
    from tea_jax.errors import ConfigError
    from tea_jax.train import step as step_lib

    with pytest.raises(ConfigError, match="'block' is not") as raised:
        step_lib.check_remat("block")
    assert "full, dots, blocks" in raised.value.hint


def test_logged_grad_norm_is_the_norm_clipping_uses_under_partial_bn():
    """Fine-tuning with partial BatchNorm: `grad_norm` leaves out the frozen BatchNorm
    parameters, as the clipping does (the ratio of an unclipped to a clipped update gives the
    norm the clipping divided by)."""
    from tea_jax.train import state as state_lib
    from tea_jax.train import step as step_lib

    model = tea_jax.create_model(
        "tsn_resnet50",
        num_classes=3,
        num_segments=2,
        stage_sizes=(1, 1, 1, 1),
        width_multiplier=0.25,
        dropout_rate=0.0,
        partial_bn=True,
    )
    rng = np.random.default_rng(0)
    video = jnp.asarray(rng.integers(0, 256, (4, 2, 16, 16, 3), dtype=np.uint8))
    batch = {"video": video, "label": jnp.asarray([0, 1, 2, 0], jnp.int32)}
    variables = model.init(jax.random.key(0), video.astype(jnp.float32))
    params = variables["params"]  # A trained-like classifier: backbone gradients that matter.
    params["fc"]["kernel"] = jax.random.normal(jax.random.key(1), params["fc"]["kernel"].shape)
    fc_updates, norms = {}, {}
    for clip in (0.0, 1.0):
        config = _config(weight_decay=0.0, momentum=0.0, clip_norm=clip)
        schedule = optim.create_schedule(
            config, global_batch_size=64, steps_per_epoch=1, total_steps=1
        )
        tx = optim.create_optimizer(
            config, params, schedule=schedule, new_classifier=True, partial_bn=True
        )
        state = state_lib.create_train_state(variables, tx)
        new, metrics = jax.jit(
            lambda s, b, tx=tx, schedule=schedule: step_lib.train_step(
                s, b, jax.random.key(2), model=model, tx=tx, schedule=schedule, partial_bn=True
            )
        )(state, batch)
        fc_updates[clip] = new.params["fc"]["kernel"] - params["fc"]["kernel"]
        norms[clip] = float(metrics["grad_norm"])
    clipped_by = np.linalg.norm(fc_updates[0.0]) / np.linalg.norm(fc_updates[1.0])
    assert norms[0.0] == pytest.approx(norms[1.0], rel=1e-6)
    assert norms[1.0] == pytest.approx(clipped_by, rel=1e-4)

    def loss(params):
        logits, _ = model.apply(
            {**variables, "params": params},
            normalize(video),
            train=True,
            mutable=["batch_stats"],
        )
        return step_lib.cross_entropy(logits, batch["label"])

    every_gradient = float(optax.global_norm(jax.jit(jax.grad(loss))(params)))
    assert every_gradient > 1.005 * norms[0.0]  # the frozen BatchNorm gradients count


def test_batch_per_host_must_split_into_bn_groups():
    from tea_jax.train import model_setup

    model_setup.check_bn_groups(8, 64)
    model_setup.check_bn_groups(0, 6)
    with pytest.raises(ValueError, match=r"bn_group_clips=8 must be 0 .* per host, 12 clips"):
        model_setup.check_bn_groups(8, 12)
