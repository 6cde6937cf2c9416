"""Training checkpoints: model and optimizer state, step and the data iterator state.

Layout of ``WORKDIR/checkpoints/<step>/``: ``state`` (Orbax pytree of :class:`TrainState`),
``data`` (the grain iterator state of every host, ``process_<i>-of-<n>.json``). Saves are
asynchronous; the manager keeps the latest ``keep`` checkpoints and the one with the best
validation top-1. Restoring places the arrays on the current mesh, so a run can continue on a
different number of devices.
"""

import logging
import signal
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from tea_jax.train.state import TrainState

STATE = "state"
DATA = "data"


class _MissingMetricsFilter(logging.Filter):
    """Hides Orbax's warning for checkpoints saved between evaluations (they have no metrics)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_MissingMetricsFilter())


class Checkpointer:
    """An Orbax ``CheckpointManager`` for :class:`TrainState` plus the data iterator.

    Args:
      directory: where the step directories live (created if missing).
      keep: number of most recent checkpoints kept.
      keep_best: also keep this many best checkpoints by the ``top1`` metric given to
        :meth:`save` (checkpoints saved without metrics are only kept as recent ones).
      async_save: write in a background thread while training continues.
    """

    def __init__(
        self, directory: str, *, keep: int = 3, keep_best: int = 1, async_save: bool = True
    ):
        policies = [checkpoint_managers.LatestN(n=keep)]
        if keep_best:
            policies.append(
                checkpoint_managers.BestN(
                    get_metric_fn=lambda m: m["top1"],
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            best_fn=lambda metrics: metrics["top1"],
            best_mode="max",
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(directory, options=options, item_names=(STATE, DATA))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the highest validation top-1 (None if none has metrics)."""
        return self.manager.best_step()

    def save(
        self,
        step: int,
        state: TrainState,
        data_iterator: Any | None,
        metrics: dict[str, float] | None = None,
    ) -> bool:
        """Starts saving ``state`` and the iterator position at ``step`` (returns at once).

        The iterator state is captured before returning, so the iterator may keep advancing.
        A step that is already saved is left as it is (returns False).
        """
        if step in self.manager.all_steps():
            return False
        items = {STATE: ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(
            step, args=ocp.args.Composite(**items), metrics=metrics, force=True
        )

    def restore(
        self, step: int, abstract_state: TrainState, data_iterator: Any | None = None
    ) -> tuple[TrainState, bool]:
        """Restores ``step`` onto the shardings of ``abstract_state``.

        Args:
          step: the step to restore.
          abstract_state: a tree of ``jax.ShapeDtypeStruct`` with the target shardings.
          data_iterator: a fresh iterator of the same pipeline; its position is restored in place.

        Returns:
          The state and whether the data iterator position was restored (it is not when the
          checkpoint was written by a different number of hosts or has no data state).
        """
        state = self.manager.restore(
            step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state)})
        )[STATE]
        if data_iterator is None:
            return state, False
        try:
            self.manager.restore(
                step,
                args=ocp.args.Composite(
                    **{DATA: grain.checkpoint.CheckpointRestore(data_iterator)}
                ),
            )
        except (ValueError, FileNotFoundError, KeyError) as e:
            logging.warning("Data iterator state of step %d not restored: %s", step, e)
            return state, False
        return state, True

    def restore_variables(self, step: int) -> dict[str, Any]:
        """Restores only ``params`` and ``batch_stats`` of ``step`` (as host numpy arrays)."""
        restored = self.manager.restore(
            step, args=ocp.args.Composite(**{STATE: ocp.args.PyTreeRestore()})
        )[STATE]
        return {"params": restored["params"], "batch_stats": restored["batch_stats"]}

    def wait(self) -> None:
        """Blocks until the pending asynchronous save is written."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


class PreemptionWatcher:
    """Turns SIGTERM into a flag that the training loop polls, on every host.

    On several hosts, a host that got the signal tells the others through a collective in
    :meth:`should_stop`, so all of them save the same step and exit together.
    """

    def __init__(self):
        self.received = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        del signum, frame
        self.received = True

    def should_stop(self) -> bool:
        if jax.process_count() == 1:
            return self.received
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self.received))
        return bool(np.any(flags))

    def close(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)
