"""Building and initialising the configured model on the mesh."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

import tea_jax
from tea_jax import convert
from tea_jax.errors import ConfigError, NotFoundError
from tea_jax.model_files import read_model_info
from tea_jax.train import sharding

_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compute_dtype(name: str, platform: str | None = None) -> jnp.dtype:
    """``'auto'`` is bfloat16 on accelerators and float32 on CPU; else a dtype name.

    ``platform`` (``'cpu'``, ``'tpu'``, ``'cuda'``...) is where the model runs: JAX's default
    backend unless given.
    """
    if name == "auto":
        platform = platform or jax.default_backend()
        return jnp.dtype(jnp.float32 if platform == "cpu" else jnp.bfloat16)
    return jnp.dtype(name)


def model_options(
    config: ml_collections.ConfigDict, num_classes: int, platform: str | None = None
) -> dict[str, Any]:
    """The keyword arguments of ``tea_jax.create_model`` for ``config`` on ``platform``."""
    options = dict(config.model_options)
    options = {
        k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if v is not None
    }
    options["dtype"] = compute_dtype(config.compute_dtype, platform)
    options["bn_group_clips"] = config.bn_group_clips
    return {"num_classes": num_classes, "num_segments": config.num_segments, **options}


def check_bn_groups(bn_group_clips: int, host_batch_size: int, hosts: int | None = None) -> None:
    """Checks that the clips of each host split into BatchNorm groups of ``bn_group_clips``.

    Raises:
      ConfigError: naming both numbers; the hint names the largest group size up to
        ``bn_group_clips`` that fits.
    """
    hosts = hosts or jax.process_count()
    if bn_group_clips < 0 or (bn_group_clips and host_batch_size % bn_group_clips):
        fitting = max(d for d in range(1, max(bn_group_clips, 1) + 1) if host_batch_size % d == 0)
        raise ConfigError(
            f"config.bn_group_clips={bn_group_clips} must be 0 (BatchNorm statistics over the "
            f"whole batch) or divide the batch per host, {host_batch_size} clips "
            f"(config.batch_size={host_batch_size * hosts} over {hosts} host(s)).",
            hint=f"pass --config.bn_group_clips={fitting} or --config.bn_group_clips=0",
        )


def _read_init_from(config: ml_collections.ConfigDict) -> tuple[str, dict[str, Any]]:
    """``read_model_info(config.init_from)``; a missing checkpoint names the command that writes
    it: the conversion of the ImageNet weights of the model's backbone, or of a released TEA
    checkpoint where ``init_from`` is a video model (a run's exported ``WORKDIR/model``)."""
    try:
        return read_model_info(config.init_from)
    except NotFoundError as e:
        if config.init_from.rstrip("/").rpartition("/")[2] == "model":
            command = convert.command_line(
                "tea", config.init_from, num_segments=config.num_segments
            )
            hint = f"train the run that exports it, or convert a released TEA: `{command}`"
        else:
            kind = "resnet50" if config.model.endswith("resnet50") else "res2net50"
            hint = f"write it with `{convert.command_line(kind, config.init_from)}`"
        raise NotFoundError(f"config.init_from {e}", hint=f"{hint} (docs/conversion.md)") from e


def new_classifier(config: ml_collections.ConfigDict, num_classes: int) -> bool:
    """Whether the classifier starts afresh rather than from ``config.init_from``.

    ``config.new_classifier`` is ``'true'``, ``'false'`` or ``'auto'``: afresh without
    ``init_from``, from an image classifier (a checkpoint with one frame per clip, such as a
    converted ImageNet Res2Net-50, whose classifier the released TSN always replaces) and from a
    video model of another class count; loaded from a video model with the same class count.

    Raises:
      ConfigError: an unknown setting, or ``'false'`` where there is no classifier to load.
      NotFoundError: ``config.init_from`` is not a model checkpoint; the hint is the command
        that writes it.
    """
    setting = str(config.new_classifier).lower()
    if setting not in ("auto", "true", "false"):
        raise ConfigError(
            f"config.new_classifier={config.new_classifier!r}: expected 'auto', 'true' or 'false'."
        )
    if setting == "true":
        return True
    if not config.init_from:
        if setting == "false":
            raise ConfigError(
                "config.new_classifier='false' loads the classifier from config.init_from, "
                "which is empty."
            )
        return True
    _, options = _read_init_from(config)
    same_classes = options["num_classes"] == num_classes
    if setting == "false":
        if not same_classes:
            raise ConfigError(
                f"config.new_classifier='false', but {config.init_from} has "
                f"{options['num_classes']} classes and the dataset {num_classes}."
            )
        return False
    return options["num_segments"] == 1 or not same_classes


def build_model(
    config: ml_collections.ConfigDict, num_classes: int, platform: str | None = None
) -> nn.Module:
    """``tea_jax.create_model(config.model, ...)`` with the config's options, to run on
    ``platform`` (JAX's default backend unless given)."""
    return tea_jax.create_model(config.model, **model_options(config, num_classes, platform))


def initializer(model: nn.Module, *, num_segments: int, image_size: int) -> Any:
    """The function ``rng -> {'params', 'batch_stats'}`` that initialises ``model``."""
    video = jnp.zeros((1, num_segments, image_size, image_size, 3), jnp.float32)

    def init(rng):
        params_rng, dropout_rng = jax.random.split(rng)
        return dict(model.init({"params": params_rng, "dropout": dropout_rng}, video, train=False))

    return init


def init_variables(
    model: nn.Module,
    *,
    num_segments: int,
    image_size: int,
    rng: jax.Array,
    mesh: jax.sharding.Mesh,
) -> dict[str, Any]:
    """Initialises ``{'params', 'batch_stats'}`` under ``jit``, replicated on the mesh."""
    init = jax.jit(
        initializer(model, num_segments=num_segments, image_size=image_size),
        out_shardings=sharding.replicated(mesh),
    )
    if jax.default_backend() != "cpu":
        return init(rng)
    # Runs once: XLA:CPU's optimisations would take most of the time (18 s -> 4 s for TEA).
    return init.lower(rng).compile(_FAST_COMPILE)(rng)
