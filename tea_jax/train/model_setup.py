"""Building and initialising the configured model on the mesh."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

import tea_jax
from tea_jax.train import sharding

_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compute_dtype(name: str) -> jnp.dtype:
    """``'auto'`` is bfloat16 on accelerators and float32 on CPU; else a dtype name."""
    if name == "auto":
        return jnp.dtype(jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16)
    return jnp.dtype(name)


def model_options(config: ml_collections.ConfigDict, num_classes: int) -> dict[str, Any]:
    """The keyword arguments of ``tea_jax.create_model`` for ``config``."""
    options = dict(config.model_options)
    options = {
        k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if v is not None
    }
    options["dtype"] = compute_dtype(config.compute_dtype)
    return {"num_classes": num_classes, "num_segments": config.num_segments, **options}


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    """``tea_jax.create_model(config.model, ...)`` with the config's options."""
    return tea_jax.create_model(config.model, **model_options(config, num_classes))


def init_variables(
    model: nn.Module,
    *,
    num_segments: int,
    image_size: int,
    rng: jax.Array,
    mesh: jax.sharding.Mesh,
) -> dict[str, Any]:
    """Initialises ``{'params', 'batch_stats'}`` under ``jit``, replicated on the mesh."""
    video = jnp.zeros((1, num_segments, image_size, image_size, 3), jnp.float32)

    def init(rng):
        params_rng, dropout_rng = jax.random.split(rng)
        return dict(model.init({"params": params_rng, "dropout": dropout_rng}, video, train=False))

    init = jax.jit(init, out_shardings=sharding.replicated(mesh))
    if jax.default_backend() != "cpu":
        return init(rng)
    # Runs once: XLA:CPU's optimisations would take most of the time (18 s -> 4 s for TEA).
    return init.lower(rng).compile(_FAST_COMPILE)(rng)
