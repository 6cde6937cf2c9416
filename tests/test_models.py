"""The registry's networks: the paper's sizes, every baseline running, training and precision."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tea_jax import MODELS, count_params, create_model, model_files
from tea_jax.flops import model_report

REDUCED = {"stage_sizes": (1, 1, 1, 1), "width_multiplier": 0.25}


def init(model, t, size=32, batch=2):
    video = jax.random.normal(jax.random.key(0), (batch, t, size, size, 3))
    return jax.jit(model.init)(jax.random.key(1), video), video


@pytest.mark.parametrize(
    "name,params",
    [("tea50", 26_148_754), ("tsn_res2net50", 25_699_120), ("tsn_resnet50", 25_557_032)],
)
def test_parameter_counts_match_the_released_models(name, params):
    model = create_model(name, num_classes=1000, num_segments=8)
    video = jax.ShapeDtypeStruct((1, 8, 224, 224, 3), jnp.float32)
    assert count_params(jax.eval_shape(model.init, jax.random.key(0), video)) == params


def test_tea50_costs_what_the_paper_says():
    """34.55 GMACs for 8 frames and 69.1 for 16 (paper: 35G and 70G); TSN Res2Net-50 34.04."""
    assert model_report("tea50", 8, 224)["gmacs"] == pytest.approx(34.55, abs=0.01)
    assert model_report("tea50", 16, 224)["gmacs"] == pytest.approx(69.10, abs=0.02)
    assert model_report("tsn_res2net50", 8, 224)["gmacs"] == pytest.approx(34.04, abs=0.01)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_runs(name):
    model = create_model(name, num_classes=5, num_segments=4, **REDUCED)
    variables, video = init(model, 4)
    logits = jax.jit(model.apply)(variables, video)
    assert logits.shape == (2, 5) and np.isfinite(logits).all()


@pytest.mark.parametrize("t", [8, 16, 5])
def test_tea_handles_any_number_of_segments(t):
    model = create_model("tea50", num_classes=3, num_segments=t, **REDUCED)
    variables, video = init(model, t, batch=1)
    apply = jax.jit(model.apply)
    assert apply(variables, video).shape == (1, 3)
    with pytest.raises(ValueError, match="num_segments"):
        apply(variables, video[:, :-1])


def test_tea_is_order_sensitive_and_tsn_is_not():
    """TSN averages per-frame predictions; TEA's output changes when the clip
    is reversed in time."""
    for name, sensitive in [("tea50", True), ("tsn_res2net50", False)]:
        model = create_model(name, num_classes=4, num_segments=8, temporal_init="normal", **REDUCED)
        variables, video = init(model, 8)
        apply = jax.jit(model.apply)
        forward, backward = apply(variables, video), apply(variables, video[:, ::-1])
        assert (not np.allclose(forward, backward, atol=1e-6)) == sensitive, name


def test_training_step_updates_statistics_and_has_gradients():
    model = create_model("tea50", num_classes=4, num_segments=4, **REDUCED)
    variables, video = init(model, 4)
    labels = jnp.array([0, 3])

    @jax.jit
    def loss_fn(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            video,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(2)},
        )
        loss = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), labels])
        return loss, updates

    grads, updates = jax.grad(loss_fn, has_aux=True)(variables["params"])
    block = grads["layer1_0"]
    for path in [
        ("me", "conv_reduce"),
        ("me", "conv_expand"),
        ("mta", "temporal_0"),
        ("mta", "conv_2"),
    ]:
        g = block[path[0]][path[1]]["kernel"]
        assert np.isfinite(g).all() and np.abs(g).max() > 0, path
    before = variables["batch_stats"]["layer2_0"]["bn3"]["mean"]
    assert not np.allclose(updates["batch_stats"]["layer2_0"]["bn3"]["mean"], before)


def test_partial_bn_freezes_every_statistic_but_the_stem():
    model = create_model("tea50", num_classes=4, num_segments=4, partial_bn=True, **REDUCED)
    variables, video = init(model, 4)
    apply = functools.partial(model.apply, train=True, mutable=["batch_stats"])
    _, updates = jax.jit(apply)(variables, video, rngs={"dropout": jax.random.key(0)})
    old, new = variables["batch_stats"], updates["batch_stats"]
    assert not np.allclose(old["bn1"]["mean"], new["bn1"]["mean"])
    del old["bn1"], new["bn1"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, old, new)


def test_bn_group_clips_normalise_each_group_of_clips_on_its_own():
    """16 clips with groups of 8 are the two halves run separately (every BatchNorm, ME's pooled
    one too, sees its group's 8 clips and all their frames); the running statistics are the
    mean of the halves'."""
    kwargs = dict(num_classes=4, num_segments=3, dropout_rate=0.0, **REDUCED)
    grouped = create_model("tea50", bn_group_clips=8, **kwargs)
    variables, video = init(grouped, 3, batch=16)
    video = video * jnp.arange(1, 17).reshape(16, 1, 1, 1, 1)  # unequal halves
    apply = functools.partial(grouped.apply, train=True, mutable=["batch_stats"])
    logits, updates = jax.jit(apply)(variables, video)
    whole = jax.jit(functools.partial(create_model("tea50", **kwargs).apply, **apply.keywords))
    halves = [whole(variables, half) for half in (video[:8], video[8:])]
    np.testing.assert_allclose(logits, np.concatenate([h[0] for h in halves]), rtol=1e-4, atol=1e-5)
    mean_stats = jax.tree.map(lambda a, b: (a + b) / 2, halves[0][1], halves[1][1])
    jax.tree.map(
        functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6), updates, mean_stats
    )
    assert not np.allclose(logits, whole(variables, video)[0], atol=1e-3)
    with pytest.raises(ValueError, match="bn_group_clips=8"):
        jax.eval_shape(apply, variables, video[:12])


def test_temporal_stages_choose_where_tea_blocks_go():
    model = create_model("tea50", num_classes=4, num_segments=4, temporal_stages=(3, 4), **REDUCED)
    params = init(model, 4)[0]["params"]
    assert "me" not in params["layer1_0"] and "temporal_0" not in params["layer2_0"]["mta"]
    assert "me" in params["layer3_0"] and "temporal_3" in params["layer4_0"]["mta"]


def test_bfloat16_forward_is_close_to_float32():
    video = jax.random.normal(jax.random.key(0), (2, 8, 64, 64, 3))
    model32 = create_model("tea50", num_classes=10, num_segments=8, **REDUCED)
    model16 = create_model("tea50", num_classes=10, num_segments=8, dtype=jnp.bfloat16, **REDUCED)
    variables = jax.jit(model32.init)(jax.random.key(1), video)
    fc = variables["params"]["fc"]["kernel"]
    variables["params"]["fc"]["kernel"] = jax.random.normal(jax.random.key(2), fc.shape) * 0.05
    out32 = jax.jit(model32.apply)(variables, video)
    out16 = jax.jit(model16.apply)(variables, video)
    assert out16.dtype == jnp.float32
    assert jax.tree_util.tree_leaves(variables["params"])[0].dtype == jnp.float32
    np.testing.assert_allclose(out16, out32, atol=0.05 * float(jnp.abs(out32).max()))


def test_unknown_model_lists_the_registry():
    with pytest.raises(ValueError, match="tea50"):
        create_model("tea101", num_classes=2, num_segments=8)


def _scaled_random_variables(model, t):
    """Variables of `model` drawn in numpy from its abstract shapes: nothing runs to initialise.

    Kernels are normal with variance 1 / fan-in; BatchNorm scales and variances are 1, other
    vectors 0.
    """
    rng = np.random.default_rng(0)

    def draw(path, shape):
        name = path[-1].key
        if len(shape.shape) > 1:
            fan_in = np.prod(shape.shape[:-1])
            return (rng.normal(size=shape.shape) / np.sqrt(fan_in)).astype(shape.dtype)
        return np.full(shape.shape, name in ("scale", "var"), shape.dtype)

    return jax.tree_util.tree_map_with_path(draw, model_files.abstract_variables(model, t))


@pytest.mark.slow
def test_full_size_tea50_compiles_and_runs():
    model = create_model("tea50", num_classes=7, num_segments=8)
    video = jax.random.normal(jax.random.key(0), (1, 8, 64, 64, 3))
    logits = jax.jit(model.apply)(_scaled_random_variables(model, 8), video)
    assert logits.shape == (1, 7) and np.isfinite(logits).all()


def temporal_reach(name: str, num_segments: int = 20, **options) -> tuple[int, int]:
    """How far back and ahead of a frame the per-frame predictions see: (min, max) of t - j over
    the frames t whose classifier output changes when frame j (the middle one) changes."""
    model = create_model(name, num_classes=2, num_segments=num_segments, **options)
    variables, video = init(model, num_segments, batch=1)
    j = num_segments // 2
    changed = video.at[:, j].add(jax.random.normal(jax.random.key(2), video.shape[2:]))

    @jax.jit
    def per_frame_outputs(clip):
        _, state = model.apply(
            variables,
            clip,
            capture_intermediates=lambda module, _: module.name == "fc",
            mutable=["intermediates"],
        )
        return state["intermediates"]["fc"]["__call__"][0]

    outputs = [np.asarray(per_frame_outputs(clip)) for clip in (video, changed)]
    seen = np.nonzero(np.abs(outputs[1] - outputs[0]).max(-1) > 0)[0] - j
    return int(seen.min()), int(seen.max())


@pytest.mark.parametrize(
    "name,stage_sizes,temporal_stages,reach",
    [
        # One block per stage: Res2Net's first block of a stage has no hierarchical residual, so
        # MTA has no cascade and reaches one frame per block, as (2+1)D does.
        ("mta50", (1, 1, 1, 1), (1, 2, 3, 4), (-4, 4)),
        # The order task's skeleton (configs/synthetic_order.py).
        ("r2plus1d_res2net50", (1, 1, 2, 2), (3, 4), (-4, 4)),
        ("mta50", (1, 1, 2, 2), (3, 4), (-8, 8)),
    ],
)
def test_temporal_reach(name, stage_sizes, temporal_stages, reach):
    """What the architecture can reach once trained: temporal kernels drawn at random (MTA's
    cascaded fragments start as identities)."""
    options = {"stage_sizes": stage_sizes, "temporal_stages": temporal_stages}
    options["temporal_init"] = "normal"
    assert temporal_reach(name, width_multiplier=0.25, **options) == reach
