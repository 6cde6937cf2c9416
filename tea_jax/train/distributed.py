"""Multi-host start-up shared by the command-line tools.

``jax.distributed.initialize()`` discovers the other processes by itself on TPU pod slices,
SLURM and Open MPI; elsewhere give ``--coordinator_address``, ``--num_processes`` and
``--process_id`` to every process.
"""

import os

import jax
from absl import app, flags
from absl import logging as absl_logging

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-host runs outside TPU/SLURM)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout",
    100,
    "Seconds without a heartbeat after which a process counts as lost; the others then stop "
    "with an error naming it instead of waiting in a collective.",
)
_CPU_COLLECTIVES = flags.DEFINE_string(
    "cpu_collectives", None, "CPU collectives for multi-process CPU runs, e.g. 'gloo'."
)


def _cluster_detected() -> bool:
    """Whether the environment is a multi-host job that JAX can discover on its own."""
    for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if int(os.environ.get(var, "1")) > 1:
            return True
    return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize() -> None:
    """Joins the other processes of a multi-host run (no-op for a single process)."""
    if _CPU_COLLECTIVES.value:
        jax.config.update("jax_cpu_collectives_implementation", _CPU_COLLECTIVES.value)
    timeout = {"heartbeat_timeout_seconds": _HEARTBEAT_TIMEOUT.value}
    if _COORDINATOR.value:
        jax.distributed.initialize(
            _COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
            **timeout,
        )
    elif _cluster_detected():
        jax.distributed.initialize(**timeout)


def start(argv: list[str]) -> None:
    """Common start of the command-line tools: rejects stray arguments, keeps absl's logging at
    WARNING unless `--verbosity` is given, and joins the other processes."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
    initialize()
