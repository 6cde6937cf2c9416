"""Multi-host start-up shared by the command-line tools.

``jax.distributed.initialize()`` discovers the other processes by itself on TPU pod slices,
SLURM and Open MPI; elsewhere give ``--coordinator_address``, ``--num_processes`` and
``--process_id`` to every process. One process runs per host and drives all of its accelerators
(on CPUs, several processes may share a host); every process says what it found in one line.
"""

import os
import re

import jax
from absl import app, flags
from absl import logging as absl_logging

from tea_jax.errors import LostProcessError, UserError

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


# What gloo's collectives and JAX's coordination service say when another process has gone.
_LOST_PROCESS = re.compile(
    r"Connection (?:closed|reset) by peer|heartbeat timeout|stopped sending heartbeats"
)


def _slurm_tasks_on_this_node() -> int:
    """The tasks of this SLURM step on this node, from ``SLURM_STEP_TASKS_PER_NODE`` (``2(x3),1``:
    two tasks on each of the first three nodes, one on the fourth) and ``SLURM_NODEID``."""
    spec = os.environ.get("SLURM_STEP_TASKS_PER_NODE") or os.environ["SLURM_TASKS_PER_NODE"]
    counts = []
    for count, repeat in re.findall(r"(\d+)(?:\(x(\d+)\))?", spec):
        counts += [int(count)] * int(repeat or 1)
    return counts[min(int(os.environ.get("SLURM_NODEID", "0")), len(counts) - 1)]


def _cluster() -> tuple[str, int] | None:
    """The multi-process job that JAX discovers on its own, as (description, processes on this
    host), or None."""
    env = os.environ
    if "SLURM_JOB_ID" in env and "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        step = env.get("SLURM_STEP_ID", "?")
        restart = env.get("SLURM_RESTART_COUNT", "0")
        where = f"{env.get('SLURM_STEP_NUM_NODES', env.get('SLURM_NNODES', '?'))} node(s)"
        description = (
            f"SLURM job {env['SLURM_JOB_ID']} step {step} (restart {restart}), "
            f"{env['SLURM_NTASKS']} tasks on {where}"
        )
        return description, _slurm_tasks_on_this_node()
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        description = f"Open MPI, {env['OMPI_COMM_WORLD_SIZE']} ranks"
        return description, int(env.get("OMPI_COMM_WORLD_LOCAL_SIZE", "1"))
    if "," in env.get("TPU_WORKER_HOSTNAMES", ""):
        workers = len(env["TPU_WORKER_HOSTNAMES"].split(","))
        return f"TPU pod slice, {workers} workers", 1
    return None


def _check_one_process_per_host(description: str, on_this_host: int) -> None:
    """Stops a job that starts several processes on a host with accelerators: each process would
    claim all of the host's devices, or only one of them."""
    platform = jax.local_devices()[0].platform
    if on_this_host > 1 and platform != "cpu":
        raise UserError(
            f"{description} starts {on_this_host} processes on this host "
            f"({os.uname().nodename}); tea_jax runs one process per host that drives all of its "
            f"{jax.local_device_count()} {platform} device(s).",
            hint="Start one task per node (sbatch --ntasks-per-node=1, mpirun --map-by node with "
            "one slot per host); see scripts/slurm/train.sbatch and scripts/mpi/train.sh.",
        )


def initialize() -> None:
    """Joins the other processes of a multi-host run and prints what this process found (nothing
    for a single process started without flags).

    Raises:
      UserError: a cluster job starts several processes on a host with accelerators.
    """
    if _CPU_COLLECTIVES.value:
        jax.config.update("jax_cpu_collectives_implementation", _CPU_COLLECTIVES.value)
    timeout = {"heartbeat_timeout_seconds": _HEARTBEAT_TIMEOUT.value}
    cluster = _cluster()
    if _COORDINATOR.value:
        jax.distributed.initialize(
            _COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
            **timeout,
        )
        description = f"--coordinator_address={_COORDINATOR.value}"
    elif cluster:
        description, on_this_host = cluster
        jax.distributed.initialize(**timeout)
        if on_this_host == 1:
            # JAX gives each SLURM or Open MPI process the one GPU of its local rank; the only
            # process on a host drives them all.
            jax.config.update("jax_cuda_visible_devices", "all")
            jax.config.update("jax_rocm_visible_devices", "all")
        _check_one_process_per_host(description, on_this_host)
    else:
        return
    devices = jax.local_devices()
    print(
        f"{description}: process {jax.process_index()} of {jax.process_count()}, "
        f"{len(devices)} local device(s): {', '.join(str(d) for d in devices)}",
        flush=True,
    )


def start(argv: list[str]) -> None:
    """Common start of the command-line tools: rejects stray arguments, keeps absl's logging at
    WARNING unless `--verbosity` is given, and joins the other processes."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
    initialize()


def check_lost_process(error: Exception, resume: str) -> None:
    """Raises :class:`LostProcessError` from ``error`` when it says that another process of this
    run has gone; ``resume`` says where the run resumes."""
    message = str(error)
    if jax.process_count() == 1 or not _LOST_PROCESS.search(message):
        return
    cause = re.sub(r"\s*\[[\w/.]+\.cc:\d+\]", "", message.splitlines()[0])
    raise LostProcessError(
        f"lost another process of this run ({cause})",
        hint=f"that process stopped first and its log says why; {resume}",
    ) from error
