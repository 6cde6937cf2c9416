"""The training state: step, fp32 parameters, BatchNorm statistics and optimizer state."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint needs to continue training (apart from the data iterator).

    Attributes:
      step: number of optimizer steps taken (int32 scalar).
      params: fp32 master parameters.
      batch_stats: BatchNorm running statistics.
      opt_state: the optax state.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState

    @property
    def variables(self) -> dict[str, Any]:
        """The ``{'params', 'batch_stats'}`` dict that ``model.apply`` takes."""
        return {"params": self.params, "batch_stats": self.batch_stats}


def create_train_state(variables: dict[str, Any], tx: optax.GradientTransformation) -> TrainState:
    """Wraps freshly initialised (or loaded) variables and a new optimizer state."""
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
    )
