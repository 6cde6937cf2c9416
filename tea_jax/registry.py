"""The registry of networks: TEA and the baselines of the paper's ablations, all on one skeleton."""

import functools
from collections.abc import Callable

import flax.linen as nn
import jax

from tea_jax.errors import ConfigError
from tea_jax.modules import Res2NetBlock, ResNetBlock, VideoResNet

_res2net50 = functools.partial(VideoResNet, block=Res2NetBlock)
_resnet50 = functools.partial(VideoResNet, block=ResNetBlock)

MODELS: dict[str, Callable[..., nn.Module]] = {
    # TEA: every Res2Net bottleneck with Motion Excitation and Multiple Temporal Aggregation.
    "tea50": functools.partial(_res2net50, temporal="mta", excitation="me"),
    # 2-D networks without temporal modelling (TSN).
    "tsn_res2net50": _res2net50,
    "tsn_resnet50": _resnet50,
    # TSM: residual shift of 1/8 + 1/8 of the channels.
    "tsm_resnet50": functools.partial(_resnet50, temporal="shift"),
    # (2+1)D: a shift-initialised channel-wise temporal conv after the first 1x1 conv.
    "r2plus1d_resnet50": functools.partial(_resnet50, temporal="conv"),
    "r2plus1d_res2net50": functools.partial(_res2net50, temporal="conv"),
    # Ablations (paper Table 1): MTA alone; ME, ME without residual and SE on the (2+1)D ResNet.
    "mta50": functools.partial(_res2net50, temporal="mta"),
    "me50": functools.partial(_resnet50, temporal="conv", excitation="me"),
    "me_nores50": functools.partial(_resnet50, temporal="conv", excitation="me", me_residual=False),
    "se50": functools.partial(_resnet50, temporal="conv", excitation="se"),
}


def create_model(name: str, *, num_classes: int, num_segments: int, **options) -> nn.Module:
    """Builds a registered network.

    Args:
      name: a key of `MODELS`, e.g. `tea50`.
      num_classes: classifier outputs.
      num_segments: T, the frames per clip.
      **options: attributes of `VideoResNet` (`dtype`, `dropout_rate`, `variant`, `temporal_init`,
        `temporal_stages`, `stage_sizes`, `width_multiplier`, `partial_bn`, ...).

    Returns:
      The module; call it as `model.apply(variables, video, train=False)` with
      `video` `(N, T, H, W, 3)`.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes, num_segments=num_segments, **options)


def count_params(variables) -> int:
    """Number of trainable parameters (the `params` collection) of `variables`."""
    params = variables.get("params", variables)
    return sum(x.size for x in jax.tree_util.tree_leaves(params))
