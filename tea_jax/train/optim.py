"""Optimizer recipe: parameter groups, learning-rate schedule, clipping and partial BatchNorm.

The recipe follows the released TSN/TSM/TEA PyTorch training scripts:

* the learning rate is given for a reference batch size (``optim.lr_batch_size``, 64 in the
  paper) and scaled linearly with the global batch size;
* weight decay is coupled L2 (added to the gradient before momentum, as ``torch.optim.SGD``);
* the gradient is clipped by its global norm before the decay is added;
* parameters fall into groups with their own learning-rate and decay multipliers
  (see :func:`param_groups`).
"""

from collections.abc import Mapping
from typing import Any

import flax
import jax.numpy as jnp
import ml_collections
import optax

from tea_jax.errors import ConfigError

GROUPS = ("weight", "bias", "bn", "fc_weight", "fc_bias", "frozen")


def _is_bn(name: str) -> bool:
    return name.startswith("bn") or name.startswith("downsample_bn")


def param_groups(params: Any, *, partial_bn: bool = False) -> Any:
    """Labels every parameter with its optimizer group.

    Groups: ``weight`` (convolution/dense kernels and temporal kernels), ``bias`` (biases outside
    BatchNorm and the classifier), ``bn`` (BatchNorm scale and bias), ``fc_weight`` /
    ``fc_bias`` (the classifier ``fc``) and ``frozen`` (with ``partial_bn``, the affine parameters
    of every BatchNorm but the stem's ``bn1``).

    Args:
      params: the model's ``params`` tree.
      partial_bn: freeze all BatchNorm affine parameters except the top-level ``bn1``.

    Returns:
      A tree with the structure of ``params`` whose leaves are group names.
    """
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    labels = {}
    for path, _ in flat.items():
        modules, leaf = path[:-1], path[-1]
        if modules and modules[0] == "fc":
            labels[path] = "fc_bias" if leaf == "bias" else "fc_weight"
        elif modules and _is_bn(modules[-1]):
            stem_bn = modules == ("bn1",)
            labels[path] = "frozen" if partial_bn and not stem_bn else "bn"
        elif leaf == "bias":
            labels[path] = "bias"
        else:
            labels[path] = "weight"
    return flax.traverse_util.unflatten_dict(labels)


def _frozen_mask(labels: Any) -> Any:
    return flax.traverse_util.unflatten_dict(
        {k: v == "frozen" for k, v in flax.traverse_util.flatten_dict(labels).items()}
    )


def clipped_norm(grads: Any, *, partial_bn: bool = False) -> Any:
    """The global norm of ``grads`` that clipping sees: without the frozen parameters."""
    labels = flax.traverse_util.flatten_dict(param_groups(grads, partial_bn=partial_bn))
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(grads))
    return optax.global_norm([g for k, g in flat.items() if labels[k] != "frozen"])


def group_multipliers(
    config: ml_collections.ConfigDict, *, new_classifier: bool
) -> dict[str, tuple[float, float]]:
    """Learning-rate and weight-decay multipliers of each group.

    Args:
      config: the ``optim`` config.
      new_classifier: whether the classifier was freshly initialised (not loaded); only then
        does it get ``classifier_lr_mult`` / ``classifier_bias_lr_mult``.

    Returns:
      ``{group: (lr_mult, decay_mult)}``.
    """
    bias_lr = config.bias_lr_mult
    return {
        "weight": (1.0, 1.0),
        "bias": (bias_lr, 0.0),
        "bn": (1.0, config.bn_decay_mult),
        "fc_weight": (config.classifier_lr_mult if new_classifier else 1.0, 1.0),
        "fc_bias": (config.classifier_bias_lr_mult if new_classifier else bias_lr, 0.0),
        "frozen": (0.0, 0.0),
    }


def create_schedule(
    config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    steps_per_epoch: int,
    total_steps: int,
) -> optax.Schedule:
    """The base learning rate as a function of the step (before group multipliers).

    ``config.lr`` is the rate at ``config.lr_batch_size`` clips and is scaled linearly with
    ``global_batch_size``. ``schedule='step'`` divides it by ``1/lr_decay`` at each epoch of
    ``lr_steps``; ``'cosine'`` decays it to zero at ``total_steps``. During the first
    ``warmup_epochs`` the rate is multiplied by a linear ramp ``(step + 1) / warmup_steps``.
    """
    base_lr = config.lr * global_batch_size / config.lr_batch_size
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    if config.schedule == "step":
        boundaries = {round(e * steps_per_epoch): config.lr_decay for e in config.lr_steps}
        main = optax.piecewise_constant_schedule(base_lr, boundaries)
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(base_lr, max(total_steps, 1))
    elif config.schedule == "constant":
        main = optax.constant_schedule(base_lr)
    else:
        raise ConfigError(
            f"Unknown optim.schedule {config.schedule!r}: use step, cosine or constant."
        )
    if warmup_steps <= 0:
        return main

    def warmed_up(step):
        return main(step) * jnp.minimum(1.0, (step + 1) / warmup_steps)

    return warmed_up


def _group_transform(
    config: ml_collections.ConfigDict,
    schedule: optax.Schedule,
    lr_mult: float,
    decay_mult: float,
) -> optax.GradientTransformation:
    if lr_mult == 0.0:
        return optax.set_to_zero()
    weight_decay = config.weight_decay * decay_mult

    def neg_lr(step):
        return -lr_mult * schedule(step)

    if config.name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(weight_decay),
            optax.trace(decay=config.momentum, nesterov=config.nesterov),
            optax.scale_by_schedule(neg_lr),
        )
    if config.name == "adamw":
        return optax.chain(
            optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps),
            optax.add_decayed_weights(weight_decay),
            optax.scale_by_schedule(neg_lr),
        )
    raise ConfigError(f"Unknown optim.name {config.name!r}: use sgd or adamw.")


def create_optimizer(
    config: ml_collections.ConfigDict,
    params: Any,
    *,
    schedule: optax.Schedule,
    new_classifier: bool,
    partial_bn: bool = False,
) -> optax.GradientTransformation:
    """Builds the optimizer of the recipe.

    Order of operations on the gradient: frozen parameters get zero gradient, the remaining
    gradient is clipped to global norm ``clip_norm`` (if > 0), then each group adds its weight
    decay (coupled L2 for SGD, decoupled for AdamW), applies momentum/Adam and scales by
    ``-lr * lr_mult``.

    Args:
      config: the ``optim`` config (name, lr, momentum, weight_decay, clip_norm, multipliers).
      params: the model parameters (only their structure is used).
      schedule: the base learning rate per step (:func:`create_schedule`).
      new_classifier: whether the classifier multipliers apply.
      partial_bn: freeze the affine parameters of all BatchNorm layers but the first.
    """
    labels = param_groups(params, partial_bn=partial_bn)
    multipliers = group_multipliers(config, new_classifier=new_classifier)
    frozen = _frozen_mask(labels)
    transforms: list[optax.GradientTransformation] = [optax.masked(optax.set_to_zero(), frozen)]
    if config.clip_norm > 0:
        transforms.append(optax.clip_by_global_norm(config.clip_norm))
    transforms.append(
        optax.multi_transform(
            {g: _group_transform(config, schedule, *multipliers[g]) for g in GROUPS}, labels
        )
    )
    return optax.chain(*transforms)


def count_groups(labels: Any) -> Mapping[str, int]:
    """Number of parameter tensors in each group (for the run summary)."""
    counts: dict[str, int] = dict.fromkeys(GROUPS, 0)
    for v in flax.traverse_util.flatten_dict(labels).values():
        counts[v] += 1
    return counts
