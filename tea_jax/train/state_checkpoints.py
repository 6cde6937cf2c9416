"""Training checkpoints: model and optimizer state, step and the data iterator state.

Layout of ``WORKDIR/checkpoints/<step>/``: ``state`` (Orbax pytree of :class:`TrainState`),
``data`` (the grain iterator state of every host, ``process_<i>-of-<n>.json``), ``meta`` (the
size of the training split). Saves are asynchronous; the manager keeps the latest ``keep``
checkpoints and the one with the best validation top-1. Every restore names its target: the
arrays go onto the shardings of the current mesh, so a run continues, and is evaluated, on any
number of devices and hosts. A checkpoint is trusted
only once it restores completely on every host; :meth:`Checkpointer.restore_latest` falls back to
older ones.
"""

import dataclasses
import logging
import re
import signal
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from tea_jax import storage
from tea_jax.errors import UserError
from tea_jax.train.state import TrainState

STATE = "state"
DATA = "data"
META = "meta"
_DATA_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")


class CheckpointError(UserError, RuntimeError):
    """No checkpoint of a directory that holds some can be restored."""


class CheckpointSaveError(UserError, RuntimeError):
    """Writing a checkpoint failed (the earlier ones are left as they were)."""

    def __init__(self, path: str, step: int, cause: BaseException):
        super().__init__(
            f"Saving the checkpoint of step {step} to {path} failed: {cause}",
            hint="the earlier checkpoints are intact: fix the cause (e.g. free disk space) and "
            "run the same command again to resume",
        )
        self.path, self.step = path, step


@dataclasses.dataclass
class Restored:
    """What :meth:`Checkpointer.restore_latest` resumed from.

    Attributes:
      step: the restored step.
      path: its directory.
      state: the restored :class:`TrainState`.
      data_restart: None when the data iterator continues where it was saved, else why it
        starts the data order again.
      skipped: ``(path, reason)`` of the newer checkpoints that could not be restored.
    """

    step: int
    path: str
    state: TrainState
    data_restart: str | None
    skipped: list[tuple[str, str]]


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def _of_every_process(flag: bool) -> np.ndarray:
    """``flag`` as every process holds it (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return np.asarray([flag])
    return np.asarray(multihost_utils.process_allgather(np.asarray(flag)))


def _on_every_process(fn, *args) -> tuple[Any, str | None]:
    """``fn(*args)``, and why it failed here or on another process (None: it succeeded on all).

    Every process must call it, in the same order: the processes exchange whether it succeeded.
    """
    try:
        result, reason = fn(*args), None
    except Exception as e:  # Any failure to read a checkpoint makes it untrusted.
        result, reason = None, _reason(e)
    if not np.all(_of_every_process(reason is None)) and reason is None:
        reason = "another host could not restore it"
    return result, reason


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
        self.directory = directory
        self.manager = ocp.CheckpointManager(
            directory, options=options, item_names=(STATE, DATA, META)
        )
        self._pending: int | None = None
        self._failed = False

    def step_path(self, step: int) -> str:
        return storage.join(self.directory, str(step))

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
        num_examples: int | None = None,
    ) -> bool:
        """Starts saving ``state`` and the iterator position at ``step`` (returns at once).

        The iterator state is captured before returning, so the iterator may keep advancing.
        A step that is already saved is left as it is (returns False).

        Args:
          step: the training step.
          state: the train state.
          data_iterator: the training iterator, or None.
          metrics: validation metrics (``top1``) for keeping the best checkpoints.
          num_examples: size of the training split, checked when resuming.

        Raises:
          CheckpointSaveError: this save, or the previous asynchronous one, failed.
        """
        self._finish_pending()
        if step in self.manager.all_steps():
            return False
        items = {STATE: ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
        if num_examples is not None:
            items[META] = ocp.args.JsonSave({"num_examples": num_examples})
        try:
            saved = self.manager.save(
                step, args=ocp.args.Composite(**items), metrics=metrics, force=True
            )
        except Exception as e:
            self._failed = True
            raise CheckpointSaveError(self.step_path(step), step, e) from e
        self._pending = step
        return saved

    def _finish_pending(self) -> None:
        """Waits for the asynchronous save in flight; raises if it failed."""
        step, self._pending = self._pending, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            self._failed = True
            if step is None:
                raise
            raise CheckpointSaveError(self.step_path(step), step, e) from e

    def restore_latest(
        self,
        abstract_state: TrainState,
        data_iterator: Any | None = None,
        num_examples: int | None = None,
    ) -> Restored | None:
        """Restores the newest checkpoint that restores completely.

        A checkpoint with a missing, truncated or unreadable file is skipped with a warning
        naming it and the error, and the next older one is tried. The hosts agree: a checkpoint
        that fails to restore on one of them is skipped by all, so they resume from one step.

        Args:
          abstract_state: a tree of ``jax.ShapeDtypeStruct`` with the target shardings.
          data_iterator: a fresh iterator of the same pipeline; its position is restored in place
            unless the data order has to start again (see :attr:`Restored.data_restart`).
          num_examples: the current size of the training split.

        Returns:
          The restored checkpoint, or None when the directory holds no checkpoint.

        Raises:
          CheckpointError: there are checkpoints but none of them restores.
        """
        skipped = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            path = self.step_path(step)
            state, reason = _on_every_process(self.restore, step, abstract_state)
            if reason is None:
                data_restart, reason = _on_every_process(
                    self._data_restart, step, data_iterator, num_examples
                )
            if reason is None and data_restart is None:
                _, reason = _on_every_process(self._restore_iterator, step, data_iterator)
            if reason is not None:
                logging.warning("Skipping checkpoint %s, it does not restore: %s", path, reason)
                skipped.append((path, reason))
                continue
            self._set_aside([p for p, _ in skipped])
            return Restored(step, path, state, data_restart, skipped)
        if skipped:
            raise CheckpointError(
                f"No checkpoint in {self.directory} restores: "
                + "; ".join(f"{path}: {reason}" for path, reason in skipped),
                hint=f"move {self.directory} away to start from scratch",
            )
        return None

    def _set_aside(self, paths: list[str]) -> None:
        """Moves checkpoints that do not restore to ``<directory>-skipped/`` (process 0), so
        that the resumed run saves those steps anew."""
        if not paths:
            return
        aside = self.directory.rstrip("/") + "-skipped"
        if jax.process_index() == 0:
            storage.makedirs(aside)
            for path in paths:
                target = storage.join(aside, storage.name(path))
                storage.rmtree(target)
                storage.rename(path, target)
                logging.warning("Moved %s to %s.", path, target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("checkpoints set aside")
        self.manager.reload()

    def _read_meta(self, step: int) -> dict[str, Any] | None:
        if not storage.isdir(storage.join(self.step_path(step), META)):
            return None
        return self.manager.restore(
            step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()})
        )[META]

    def _data_restart(
        self, step: int, data_iterator: Any | None, num_examples: int | None
    ) -> str | None:
        """Why the data order of ``step`` cannot continue, or None if it can.

        Raises:
          FileNotFoundError: this host's iterator state is missing though the checkpoint was
            written by as many hosts as this run has.
        """
        if data_iterator is None:
            return "no data iterator was given"
        meta = self._read_meta(step)
        if meta and num_examples is not None and meta["num_examples"] != num_examples:
            return (
                f"the training split had {meta['num_examples']} videos when step {step} was "
                f"saved and has {num_examples} now"
            )
        folder = storage.join(self.step_path(step), DATA)
        count = jax.process_count()
        name = f"process_{jax.process_index()}-of-{count}.json"
        if not storage.exists(storage.join(folder, name)):
            found = map(_DATA_FILE.fullmatch, storage.listdir(folder))
            saved = {int(m.group(2)) for m in found if m}
            if saved and count not in saved:
                return f"it was saved by {min(saved)} processes and this run has {count}"
            raise FileNotFoundError(f"{storage.join(folder, name)} is missing")
        return None

    def _restore_iterator(self, step: int, data_iterator: Any) -> None:
        """Restores the iterator position of ``step`` in place."""
        self.manager.restore(
            step,
            args=ocp.args.Composite(**{DATA: grain.checkpoint.CheckpointRestore(data_iterator)}),
        )

    def restore(self, step: int, abstract_state: TrainState) -> TrainState:
        """Restores the train state of ``step`` onto the shardings of ``abstract_state``.

        Args:
          step: the step to restore.
          abstract_state: a tree of ``jax.ShapeDtypeStruct`` with the target shardings.
        """
        return self.manager.restore(
            step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state)})
        )[STATE]

    def restore_variables(self, step: int, abstract_variables: dict[str, Any]) -> dict[str, Any]:
        """Restores only ``params`` and ``batch_stats`` of ``step`` (not the optimizer state).

        Args:
          step: the step to restore.
          abstract_variables: ``{'params', 'batch_stats'}`` as trees of ``jax.ShapeDtypeStruct``
            with the target shardings (those of this run's mesh, whatever devices and hosts
            wrote the checkpoint).

        Raises:
          CheckpointError: the checkpoint does not hold variables of these shapes (another model
            or other model options).
        """
        restore = ocp.args.PyTreeRestore(
            item=abstract_variables,
            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_variables),
            partial_restore=True,
        )
        try:
            return self.manager.restore(step, args=ocp.args.Composite(**{STATE: restore}))[STATE]
        except ValueError as e:
            raise CheckpointError(
                f"{self.step_path(step)} does not hold the variables of the configured model "
                f"({_reason(e)}); evaluate it with the config it was trained with."
            ) from e

    def wait(self) -> None:
        """Blocks until the pending asynchronous save is written.

        Raises:
          CheckpointSaveError: that save failed.
        """
        self._finish_pending()

    def close(self) -> None:
        """Waits for the pending save and releases the manager (after a failed save, only the
        latter: the failure was raised already)."""
        if not self._failed:
            self._finish_pending()
        self.manager.close()


class PreemptionWatcher:
    """Turns SIGTERM (or SIGUSR1, which Open MPI's ``mpirun`` forwards to every process) into a
    flag that the training loop polls, on every host.

    On several hosts, a host that got the signal tells the others through a collective in
    :meth:`should_stop`, so all of them save the same step and exit together.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.received: signal.Signals | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum, frame):
        del frame
        self.received = signal.Signals(signum)

    def should_stop(self) -> bool:
        return bool(np.any(_of_every_process(self.received is not None)))

    def close(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def __enter__(self) -> "PreemptionWatcher":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
