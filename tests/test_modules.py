"""The temporal modules against naive per-timestep references (paper Sec. 3)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tea_jax.modules import (
    MotionExcitation,
    MultipleTemporalAggregation,
    TemporalConv,
    batch_norm,
    temporal_shift,
)
from tea_jax.modules.layers import Conv1x1, DepthwiseConv3x3, avg_pool3x3, max_pool3x3


def naive_temporal_conv(x, kernel, t):
    v = np.asarray(x).reshape(-1, t, *x.shape[1:])
    out = np.zeros_like(v)
    for i in range(t):
        for tap, dt in enumerate((-1, 0, 1)):
            if 0 <= i + dt < t:
                out[:, i] += kernel[tap] * v[:, i + dt]
    return out.reshape(x.shape)


def explicit_shift(x, t, fold):
    v = np.asarray(x).reshape(-1, t, *x.shape[1:])
    out = v.copy()
    out[:, :, ..., :fold] = 0
    out[:, :-1, ..., :fold] = v[:, 1:, ..., :fold]
    out[:, :, ..., fold : 2 * fold] = 0
    out[:, 1:, ..., fold : 2 * fold] = v[:, :-1, ..., fold : 2 * fold]
    return out.reshape(x.shape)


@pytest.mark.parametrize("t", [8, 16, 5])
def test_temporal_conv_matches_naive_loop(t):
    x = jax.random.normal(jax.random.key(0), (2 * t, 4, 4, 6))
    module = TemporalConv(t, init_mode="normal")
    variables = module.init(jax.random.key(1), x)
    kernel = np.asarray(variables["params"]["kernel"])
    assert kernel.shape == (3, 6) and np.abs(kernel).min() > 0
    np.testing.assert_allclose(
        module.apply(variables, x), naive_temporal_conv(x, kernel, t), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("fold_div", [2, 8])
def test_shift_init_is_the_tsm_shift(fold_div):
    t, c = 8, 16
    x = jax.random.normal(jax.random.key(0), (2 * t, 3, 3, c))
    module = TemporalConv(t, init_mode="shift", fold_div=fold_div)
    out = module.apply(module.init(jax.random.key(1), x), x)
    expected = explicit_shift(x, t, c // fold_div)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(temporal_shift(x, t, fold_div), expected, atol=1e-6)


def test_identity_init_is_the_identity():
    x = jax.random.normal(jax.random.key(0), (16, 3, 3, 10))
    module = TemporalConv(8, init_mode="identity")
    np.testing.assert_allclose(module.apply(module.init(jax.random.key(1), x), x), x, atol=1e-6)


def _randomize_batch_stats(variables, key):
    stats = variables["batch_stats"]
    leaves, treedef = jax.tree_util.tree_flatten(stats)
    keys = jax.random.split(key, len(leaves))
    new = [
        jax.random.uniform(k, leaf.shape, minval=0.5, maxval=1.5)
        if i % 2
        else 0.1 * jax.random.normal(k, leaf.shape)
        for i, (k, leaf) in enumerate(zip(keys, leaves, strict=True))
    ]
    return {**variables, "batch_stats": jax.tree_util.tree_unflatten(treedef, new)}


def naive_motion_excitation(x, p, s, t, variant, residual):
    """ME of the released code, one time step at a time, in NumPy (eval-mode BatchNorm)."""

    def bn(y, params, stats):
        return (y - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * params["scale"] + params["bias"]

    x = np.asarray(x)
    xr = bn(x @ np.asarray(p["conv_reduce"]["kernel"]), p["bn_reduce"], s["bn_reduce"])
    k = np.asarray(p["conv_transform"]["kernel"])[:, :, 0]  # (3, 3, Cr)
    padded = np.pad(xr, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    conv = sum(padded[:, i : i + h, j : j + w] * k[i, j] for i in range(3) for j in range(3))
    xr, conv = xr.reshape(-1, t, *xr.shape[1:]), conv.reshape(-1, t, *conv.shape[1:])
    motion = np.zeros_like(xr)
    for i in range(t - 1):
        motion[:, i] = conv[:, i + 1] - xr[:, i]
    pooled = motion.mean(axis=(2, 3)).reshape(-1, xr.shape[-1])
    y = bn(pooled @ np.asarray(p["conv_expand"]["kernel"]), p["bn_expand"], s["bn_expand"])
    sig = 1 / (1 + np.exp(-y))
    gate = (sig - 0.5 if variant == "reference" else 2 * sig - 1)[:, None, None, :]
    return x + x * gate if residual else x * gate


@pytest.mark.parametrize(
    "variant,residual,t", [("reference", True, 8), ("paper", True, 16), ("reference", False, 5)]
)
def test_motion_excitation_matches_naive_reference(variant, residual, t):
    x = jax.random.normal(jax.random.key(0), (2 * t, 6, 6, 32))
    module = MotionExcitation(
        t,
        batch_norm(use_running_average=True, dtype=jnp.float32),
        variant=variant,
        residual=residual,
    )
    variables = _randomize_batch_stats(module.init(jax.random.key(1), x), jax.random.key(2))
    expected = naive_motion_excitation(
        x, variables["params"], variables["batch_stats"], t, variant, residual
    )
    np.testing.assert_allclose(module.apply(variables, x), expected, rtol=1e-4, atol=1e-5)


def test_motion_excitation_static_clip_gates_frames_alike():
    """In a static clip every frame but the last (whose motion is zero) sees the same motion."""
    t = 8
    frame = jax.random.normal(jax.random.key(0), (1, 5, 5, 32))
    static = jnp.tile(frame, (t, 1, 1, 1))
    module = MotionExcitation(t, batch_norm(use_running_average=True, dtype=jnp.float32))
    variables = module.init(jax.random.key(1), static)
    out = module.apply(variables, static)
    np.testing.assert_allclose(out[: t - 1], jnp.tile(out[:1], (t - 1, 1, 1, 1)), atol=1e-6)
    assert not np.allclose(out[-1], out[0], atol=1e-4)


def test_motion_excitation_bfloat16_keeps_small_motion():
    """bfloat16 ME stays within bfloat16 rounding of float32 ME on a clip that barely moves.

    The frames differ by 1% per step, so the motion is a small difference of nearly equal spatial
    means: pooled and subtracted in bfloat16 it is off by about 5% of the output, in float32 0.4%.
    """
    t, shape = 8, (2, 1, 14, 14, 64)
    still = jax.random.normal(jax.random.key(0), shape)
    drift = (
        0.01
        * jnp.arange(t)[None, :, None, None, None]
        * jax.random.normal(jax.random.key(1), shape)
    )
    x = (still + drift).reshape(2 * t, *shape[2:]).astype(jnp.bfloat16)

    def module(dtype):
        norm = batch_norm(use_running_average=True, dtype=dtype)
        return MotionExcitation(t, norm, residual=False, dtype=dtype)

    variables = module(jnp.float32).init(jax.random.key(2), x.astype(jnp.float32))
    full = module(jnp.float32).apply(variables, x.astype(jnp.float32))
    half = module(jnp.bfloat16).apply(variables, x)
    assert half.dtype == jnp.bfloat16
    error = jnp.abs(half.astype(jnp.float32) - full).mean() / jnp.abs(full).mean()
    assert error < 0.01, float(error)


def _mta(t, variant="reference", first_in_stage=False, strides=1):
    return MultipleTemporalAggregation(
        width=4,
        num_segments=t,
        norm=batch_norm(use_running_average=True, dtype=jnp.float32),
        strides=strides,
        first_in_stage=first_in_stage,
        variant=variant,
        temporal_init="normal",
    )


def test_mta_receptive_field_grows_along_the_cascade():
    """An impulse at frame t reaches t±1 through the first fragment
    and t±(i+1) through fragment i."""
    t, centre, width = 16, 8, 4
    module = _mta(t)
    x = jnp.zeros((t, 5, 5, 4 * width))
    variables = module.init(jax.random.key(0), x)
    impulse = x.at[centre].set(jax.random.normal(jax.random.key(1), x.shape[1:]))
    delta = np.abs(np.asarray(module.apply(variables, impulse) - module.apply(variables, x)))
    reached = delta.reshape(t, -1, 4, width).max(axis=(1, 3)) > 1e-6  # (frames, fragment)
    for fragment, radius in enumerate((1, 2, 3, 1)):
        frames = np.flatnonzero(reached[:, fragment])
        assert frames.min() == centre - radius and frames.max() == centre + radius, (
            fragment,
            frames,
        )


def test_mta_paper_variant_keeps_first_fragment_and_cascades():
    t, centre, width = 16, 8, 4
    module = _mta(t, variant="paper")
    x = jax.random.normal(jax.random.key(2), (t, 5, 5, 4 * width))
    variables = module.init(jax.random.key(0), x)
    out = module.apply(variables, x)
    np.testing.assert_array_equal(out[..., :width], x[..., :width])
    assert "temporal_3" not in variables["params"]
    impulse = jnp.zeros_like(x).at[centre].set(1.0)
    zeros = jnp.zeros_like(x)
    delta = np.abs(np.asarray(module.apply(variables, impulse) - module.apply(variables, zeros)))
    reached = delta.reshape(t, -1, 4, width).max(axis=(1, 3)) > 1e-6
    for fragment, radius in enumerate((0, 1, 2, 3)):
        frames = np.flatnonzero(reached[:, fragment])
        assert frames.min() == centre - radius and frames.max() == centre + radius, (
            fragment,
            frames,
        )


def test_mta_first_block_of_stage_pools_last_fragment():
    module = _mta(8, first_in_stage=True, strides=2)
    x = jax.random.normal(jax.random.key(0), (8, 6, 6, 16))
    variables = module.init(jax.random.key(1), x)
    out = module.apply(variables, x)
    assert out.shape == (8, 3, 3, 16)
    last = TemporalConv(8, init_mode="normal").apply(
        {"params": variables["params"]["temporal_3"]}, x[..., 12:]
    )
    padded = jnp.pad(last, ((0, 0), (1, 1), (1, 1), (0, 0)))
    pooled = sum(padded[:, i : i + 6 : 2, j : j + 6 : 2] for i in range(3) for j in range(3)) / 9
    np.testing.assert_allclose(out[..., 12:], pooled, atol=1e-5)


@pytest.mark.parametrize("size,strides", [(7, 2), (8, 2), (6, 1)])
def test_pooling_and_depthwise_views_equal_xla_windows(size, strides):
    """The shifted-view forms used for speed equal flax's pooling and a grouped convolution."""
    x = jax.random.normal(jax.random.key(0), (2, size, size, 5))
    pad = ((1, 1), (1, 1))
    np.testing.assert_array_equal(
        max_pool3x3(x, strides), nn.max_pool(x, (3, 3), (strides, strides), padding=pad)
    )
    np.testing.assert_allclose(
        avg_pool3x3(x, strides),
        nn.avg_pool(x, (3, 3), (strides, strides), padding=pad, count_include_pad=True),
        atol=1e-6,
    )
    module = DepthwiseConv3x3()
    variables = module.init(jax.random.key(1), x)
    grouped = nn.Conv(5, (3, 3), padding=1, feature_group_count=5, use_bias=False)
    np.testing.assert_allclose(module.apply(variables, x), grouped.apply(variables, x), atol=1e-5)


def test_conv1x1_and_its_gradients_equal_a_1x1_convolution():
    """The flattened matrix-product form of a 1x1 convolution
    has the convolution's values and gradients."""
    x = jax.random.normal(jax.random.key(0), (2, 3, 5, 6))
    module = Conv1x1(4)
    variables = module.init(jax.random.key(1), x)
    conv = nn.Conv(4, (1, 1), use_bias=False)
    conv_variables = {"params": {"kernel": variables["params"]["kernel"][None, None]}}

    def loss(apply, variables, x):
        return jnp.sum(jnp.sin(apply(variables, x)))

    np.testing.assert_allclose(module.apply(variables, x), conv.apply(conv_variables, x), atol=1e-5)
    grads = jax.grad(loss, argnums=(1, 2))(module.apply, variables, x)
    conv_grads = jax.grad(loss, argnums=(1, 2))(conv.apply, conv_variables, x)
    np.testing.assert_allclose(
        grads[0]["params"]["kernel"], conv_grads[0]["params"]["kernel"][0, 0], atol=1e-5
    )
    np.testing.assert_allclose(grads[1], conv_grads[1], atol=1e-5)


def _torch_bn(channels, seed):
    """A `torch.nn.BatchNorm2d` with random affine parameters and running statistics."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(seed)
    bn = torch.nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(channels, generator=gen))
        bn.running_mean.copy_(torch.randn(channels, generator=gen))
        bn.running_var.copy_(torch.rand(channels, generator=gen) + 0.5)
    return bn.train()


def _variables_of(bn):
    return {
        "params": {"scale": bn.weight.detach().numpy(), "bias": bn.bias.detach().numpy()},
        "batch_stats": {"mean": bn.running_mean.numpy(), "var": bn.running_var.numpy()},
    }


def _torch_step(bn, x):
    """One training-mode pass of an NHWC array through `bn`: (output NHWC, running mean, var)."""
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        y = bn(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1))))
    return np.moveaxis(y.numpy(), 1, -1), bn.running_mean.numpy(), bn.running_var.numpy()


@pytest.mark.parametrize("shape", [(2, 1, 1, 6), (3, 2, 2, 6), (4, 5, 3, 6)])
def test_batch_norm_matches_torch_batchnorm2d(shape):
    """Output and running statistics of two training steps; n = 2, 12 and 60 values per channel,
    where the unbiased running variance (n / (n - 1)) differs from the biased one by 100%, 9% and
    1.7%."""
    import copy

    bn = _torch_bn(shape[-1], seed=1)
    variables = _variables_of(copy.deepcopy(bn))
    module = batch_norm(use_running_average=False, dtype=jnp.float32)()
    rng = np.random.default_rng(0)
    for _ in range(2):
        x = (3 * rng.standard_normal(shape) + 1).astype(np.float32)
        y, updates = module.apply(variables, x, mutable=["batch_stats"])
        variables = {**variables, **updates}
        expected, mean, var = _torch_step(bn, x)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(variables["batch_stats"]["mean"], mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(variables["batch_stats"]["var"], var, rtol=1e-6, atol=1e-6)
    frozen = batch_norm(use_running_average=True, dtype=jnp.float32)()
    expected, _, _ = _torch_step(bn.eval(), x)
    np.testing.assert_allclose(frozen.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("clips", [8, 16])
def test_batch_norm_groups_of_8_clips_match_torch_per_gpu(clips):
    """`(N*T, H, W, C)` frames with groups of 8 clips (8*T rows): each group is normalised as
    PyTorch's BatchNorm2d normalises one GPU's 8 clips under DataParallel (one application per
    group, from the same running statistics), and the running statistics are the mean of the
    groups' updated ones."""
    import copy

    t, channels = 3, 5
    bn = _torch_bn(channels, seed=2)
    variables = _variables_of(copy.deepcopy(bn))
    x = np.random.default_rng(1).standard_normal((clips * t, 2, 2, channels)).astype(np.float32)
    x *= np.arange(1, clips * t + 1, dtype=np.float32)[:, None, None, None]  # unequal groups
    module = batch_norm(use_running_average=False, dtype=jnp.float32, group_size=8 * t)()
    y, updates = module.apply(variables, x, mutable=["batch_stats"])

    per_gpu = [_torch_step(copy.deepcopy(bn), part) for part in np.split(x, clips // 8)]
    np.testing.assert_allclose(y, np.concatenate([p[0] for p in per_gpu]), rtol=1e-5, atol=1e-4)
    mean = np.mean([p[1] for p in per_gpu], axis=0)
    var = np.mean([p[2] for p in per_gpu], axis=0)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["var"], var, rtol=1e-5)
    if clips == 16:  # Statistics over all 16 clips would be another normalisation.
        whole, _, _ = _torch_step(copy.deepcopy(bn), x)
        assert np.abs(np.asarray(y) - whole).max() > 0.1


def test_batch_norm_rejects_a_batch_not_divisible_into_groups():
    module = batch_norm(use_running_average=False, dtype=jnp.float32, group_size=8)()
    x = jnp.ones((12, 3))
    with pytest.raises(ValueError, match="groups of 8 rows"):
        module.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="more than one value per channel"):
        batch_norm(use_running_average=False, dtype=jnp.float32)().init(
            jax.random.key(0), jnp.ones((1, 3))
        )


_SHARDED_BATCH_NORM = """
import json, math, re, sys
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
from tea_jax.modules import batch_norm

mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
x = jnp.zeros((32 * 2, 4, 4, 6))  # 32 clips of 2 frames, 8 clips per device
collectives = {}
for group in (0, 8, 16):
    bn = batch_norm(use_running_average=False, dtype=jnp.float32, group_size=group * 2)()
    variables = bn.init(jax.random.key(0), x)

    def step(v, x):
        def loss(params):
            y, updates = bn.apply({**v, "params": params}, x, mutable=["batch_stats"])
            return jnp.sum(y * y), updates
        return jax.grad(loss, has_aux=True)(v["params"])

    shardings = (NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data")))
    hlo = jax.jit(step, in_shardings=shardings, out_shardings=shardings[0]).lower(variables, x)
    ops = []
    for line in hlo.compile().as_text().splitlines():
        if op := re.search(r"= (.*?) (all-[a-z-]+|collective-permute|reduce-scatter)\\(", line):
            shapes = re.findall(r"\\[([\\d,]*)\\]", op.group(1))
            sizes = [math.prod(int(d) for d in s.split(",") if d) for s in shapes]
            ops.append([op.group(2), max(sizes)])
    collectives[group] = ops
json.dump(collectives, sys.stdout)
"""


def test_batch_norm_groups_stay_on_their_devices():
    """With the batch sharded over 4 devices, the reshape into groups keeps the group axis
    sharded: no collective moves activations (only per-channel vectors cross devices), and
    groups of 8 clips on 8 clips per device need a single all-reduce (gradients and running
    statistics), against two for statistics over the whole batch."""
    import json
    import os
    import subprocess
    import sys

    from fast_compile import cpu_env

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED_BATCH_NORM],
        env=cpu_env(4, PYTHONPATH=root),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    collectives = json.loads(proc.stdout)
    for group, ops in collectives.items():
        assert ops, group
        for kind, size in ops:
            assert kind == "all-reduce" and size <= 6, (group, kind, size)
    assert len(collectives["8"]) == 1 < len(collectives["0"])
