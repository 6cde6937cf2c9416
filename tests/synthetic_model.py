"""The briefly trained reduced TEA of the tests: the network of `configs/synthetic_tea8.py`
trained in memory on clips rendered by the synthetic generator (no video files, no input
pipeline) for 200 steps, 40% of the main command's budget (`conftest.trained`)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from fast_compile import OPTIMIZED

import tea_jax
from tea_jax.data import normalize, sampling, synthetic

T = 8
SIZE = 64
STEPS = 200
TRAIN_VIDEOS = 400
BATCH = 16
OPTIONS = {"stage_sizes": (1, 1, 1, 1), "width_multiplier": 0.25, "dropout_rate": 0.0}


def clips(split, count):
    """`count` base videos of `split` and their reversals: uint8 (2 count, T, 64, 64, 3), labels."""
    videos, labels = [], []
    for index in range(count):
        pair, frames = synthetic.generate_pair(synthetic.SyntheticOptions(), split, index)
        for reverse in (False, True):
            video = frames[::-1] if reverse else frames
            videos.append(video[sampling.test_indices(len(video), T)[0]])
            labels.append(2 * pair + reverse)
    return np.stack(videos), np.asarray(labels)


def untrained():
    """(model, variables, val clips, val labels) at initialisation: no training needed."""
    model = tea_jax.create_model("tea50", num_classes=8, num_segments=T, **OPTIONS)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, T, SIZE, SIZE, 3)))
    return (model, variables, *clips("val", 1))


def trained():
    """(model, variables, val clips, val labels) after STEPS AdamW steps."""
    model = tea_jax.create_model("tea50", num_classes=8, num_segments=T, **OPTIONS)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, T, SIZE, SIZE, 3)))
    optimizer = optax.adamw(1e-3, weight_decay=1e-4)
    opt_state = optimizer.init(variables["params"])

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(variables, opt_state, video, labels):
        def loss_fn(params):
            logits, updates = model.apply(
                {**variables, "params": params},
                normalize(video),
                train=True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates

        grads, updates = jax.grad(loss_fn, has_aux=True)(variables["params"])
        changes, opt_state = optimizer.update(grads, opt_state, variables["params"])
        params = optax.apply_updates(variables["params"], changes)
        return {"params": params, **updates}, opt_state

    videos, labels = clips("train", TRAIN_VIDEOS)
    # Unlike most tests', this loop is compute-bound: it gets XLA's full optimisation.
    step = step.lower(variables, opt_state, videos[:BATCH], labels[:BATCH]).compile(OPTIMIZED)
    rng = np.random.default_rng(0)
    for _ in range(STEPS):
        batch = rng.choice(len(videos), BATCH, replace=False)
        variables, opt_state = step(variables, opt_state, videos[batch], labels[batch])
    return (model, variables, *clips("val", 16))
