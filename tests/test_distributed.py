"""What a process finds at start: the cluster job around it, and the jobs that cannot run.

The launchers themselves run in the slow tier (``test_launchers.py``); these tests read the
variables that SLURM, Open MPI and TPU VMs set, as those launchers set them.
"""

import types

import jax
import pytest

from tea_jax.errors import UserError
from tea_jax.train import distributed, sharding

CLUSTER_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_STEP_ID",
    "SLURM_RESTART_COUNT",
    "SLURM_STEP_NUM_NODES",
    "SLURM_STEP_TASKS_PER_NODE",
    "SLURM_TASKS_PER_NODE",
    "SLURM_NODEID",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "TPU_WORKER_HOSTNAMES",
)


@pytest.fixture
def env(monkeypatch):
    for name in CLUSTER_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def set_env(**variables):
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_no_cluster_outside_a_job(env):
    assert distributed._cluster() is None
    env(SLURM_JOB_ID="7", SLURM_PROCID="0", SLURM_NTASKS="1", SLURM_TASKS_PER_NODE="1")
    assert distributed._cluster() is None  # a one-task job is a single process


@pytest.mark.parametrize(("node", "tasks"), [("0", 2), ("2", 2), ("3", 1)])
def test_slurm_job_and_the_tasks_on_this_node(env, node, tasks):
    env(
        SLURM_JOB_ID="1234",
        SLURM_PROCID="0",
        SLURM_NTASKS="7",
        SLURM_STEP_ID="0",
        SLURM_RESTART_COUNT="1",
        SLURM_STEP_NUM_NODES="4",
        SLURM_STEP_TASKS_PER_NODE="2(x3),1",
        SLURM_NODEID=node,
    )
    description, on_this_host = distributed._cluster()
    assert description == "SLURM job 1234 step 0 (restart 1), 7 tasks on 4 node(s)"
    assert on_this_host == tasks


def test_open_mpi_and_tpu_pod(env):
    env(OMPI_COMM_WORLD_SIZE="4", OMPI_COMM_WORLD_LOCAL_SIZE="2")
    assert distributed._cluster() == ("Open MPI, 4 ranks", 2)
    env(OMPI_COMM_WORLD_SIZE="1", TPU_WORKER_HOSTNAMES="w0,w1,w2,w3")
    assert distributed._cluster() == ("TPU pod slice, 4 workers", 1)


def test_several_processes_on_a_gpu_host_stop_with_the_numbers(monkeypatch):
    gpus = [types.SimpleNamespace(platform="gpu") for _ in range(8)]
    monkeypatch.setattr(jax, "local_devices", lambda: gpus)
    monkeypatch.setattr(jax, "local_device_count", lambda: len(gpus))
    with pytest.raises(
        UserError, match=r"starts 2 processes on this host .* all of its 8 gpu"
    ) as e:
        distributed._check_one_process_per_host("SLURM job 5 step 0 (restart 0), 4 tasks", 2)
    assert "--ntasks-per-node=1" in e.value.hint
    distributed._check_one_process_per_host("SLURM job 5", 1)
    # CPU processes have devices of their own: several may share a host.
    monkeypatch.setattr(jax, "local_devices", lambda: [types.SimpleNamespace(platform="cpu")])
    distributed._check_one_process_per_host("SLURM job 5", 2)


def test_a_batch_the_devices_do_not_divide_stops_with_the_numbers(monkeypatch):
    monkeypatch.setattr(jax, "device_count", lambda: 16)
    monkeypatch.setattr(jax, "local_device_count", lambda: 8)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(UserError, match=r"batch_size=20 .* \(16: 8 on each of 2 process") as e:
        sharding.per_host_batch_size(20)
    assert "--config.batch_size=16" in e.value.hint
    assert sharding.per_host_batch_size(32) == 16
