"""The training step (a pure function, compiled with ``jax.jit`` by the loop)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tea_jax.data import normalize
from tea_jax.errors import ConfigError
from tea_jax.train.optim import clipped_norm
from tea_jax.train.state import TrainState

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
}
# Every `remat` setting: the policies of the whole forward pass and "blocks", each bottleneck
# rematerialised on its own (`VideoResNet.remat_blocks`).
REMAT = (*REMAT_POLICIES, "blocks")


def check_remat(remat: str) -> None:
    """Raises :class:`ConfigError` unless ``remat`` is ``''`` (none) or one of :data:`REMAT`."""
    if remat and remat not in REMAT:
        raise ConfigError(
            f"remat {remat!r} is not a rematerialisation setting.",
            hint=f"Use none (''), {', '.join(REMAT)}: configs/default.py says what each keeps.",
        )


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy.

    Args:
      logits: (N, C) float.
      labels: (N,) int.
      label_smoothing: mass spread uniformly over the classes.
    """
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean()


def topk_correct(scores: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """(N,) bool: whether the label is among the ``k`` highest scores of each row of (N, C)."""
    k = min(k, scores.shape[-1])
    _, top = jax.lax.top_k(scores, k)
    return (top == labels[:, None]).any(axis=-1)


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    label_smoothing: float = 0.0,
    remat: str = "",
    partial_bn: bool = False,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a global batch.

    Args:
      state: the replicated training state.
      batch: ``video`` uint8 (B, T, H, W, 3) and ``label`` int32 (B,), sharded along the batch.
      rng: base key; the dropout key is derived from it and the step, so it is independent of the
        number of devices.
      model: the Flax module.
      tx: the optimizer.
      schedule: the learning-rate schedule (for logging).
      label_smoothing: label smoothing of the loss.
      remat: rematerialisation of the forward pass to save memory: ``''`` keeps every
        activation for the backward pass, ``'dots'`` keeps only matrix products and
        convolutions (recomputes normalisations and activations), ``'full'`` keeps only the
        input (recomputes the whole forward pass), ``'blocks'`` keeps each bottleneck's input
        and recomputes one block at a time in the backward pass.
      partial_bn: whether ``tx`` freezes the BatchNorm parameters of partial BatchNorm
        (``optim.create_optimizer``'s argument); they do not count in the logged ``grad_norm``.

    Returns:
      The new state and replicated scalar metrics ``loss``, ``top1``, ``top5``, ``grad_norm``
      (the gradient's global norm before clipping, without the parameters that partial BatchNorm
      freezes: the norm that clipping uses), ``lr``.
    """
    video = normalize(batch["video"])
    labels = batch["label"]
    dropout_rng = jax.random.fold_in(rng, state.step)
    if remat == "blocks":
        model = model.clone(remat_blocks=True)

    def forward(params, batch_stats, video):
        return model.apply(
            {"params": params, "batch_stats": batch_stats},
            video,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": dropout_rng},
        )

    if remat and remat != "blocks":
        forward = jax.checkpoint(forward, policy=REMAT_POLICIES[remat])

    def loss_fn(params):
        logits, updates = forward(params, state.batch_stats, video)
        logits = logits.astype(jnp.float32)
        return cross_entropy(logits, labels, label_smoothing), (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    metrics = {
        "loss": loss,
        "top1": topk_correct(logits, labels, 1).mean(),
        "top5": topk_correct(logits, labels, 5).mean(),
        "grad_norm": clipped_norm(grads, partial_bn=partial_bn),
        "lr": jnp.asarray(schedule(state.step), jnp.float32),
    }
    return new_state, metrics
