"""Training as clusters run it: the launch scripts of ``scripts/`` under a real SLURM (munged,
slurmctld and slurmd started for these tests, see ``slurm_cluster``) and a real Open MPI.

Every job is the reduced TEA of ``configs/synthetic_tea8.py`` on a small synthetic dataset, two
processes of one CPU device each with gloo collectives, submitted as the scripts are written
(``sbatch scripts/slurm/train.sbatch CONFIG WORKDIR ...``; the options that ask for GPU nodes are
overridden on sbatch's command line). Without the launchers the tests skip, saying how to install
them; with ``TEA_JAX_REQUIRE_LAUNCHERS=1`` (CI) they fail instead.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import local_servers
import numpy as np
import psutil
import pytest
import slurm_cluster
from fast_compile import cpu_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 8
# Two tasks on this one node, no GPUs; the script asks for GPU nodes.
SBATCH_OPTIONS = ["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1"]


def _require(reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("TEA_JAX_REQUIRE_LAUNCHERS") == "1":
        pytest.fail(f"TEA_JAX_REQUIRE_LAUNCHERS=1 but {reason}")
    pytest.skip(reason)


def test_missing_launchers_skip_with_the_install_command_or_fail_where_required(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    reason = slurm_cluster.missing()
    assert slurm_cluster.INSTALL in reason
    monkeypatch.delenv("TEA_JAX_REQUIRE_LAUNCHERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install"):
        _require(reason)
    monkeypatch.setenv("TEA_JAX_REQUIRE_LAUNCHERS", "1")
    with pytest.raises(pytest.fail.Exception, match="TEA_JAX_REQUIRE_LAUNCHERS=1 but SLURM"):
        _require(reason)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The dataset and the compilation cache that every job of this module shares."""
    return tmp_path_factory.mktemp("launchers")


def _train_flags(files, workdir) -> list[str]:
    return [
        "configs/synthetic_tea8.py",
        str(workdir),
        "--cpu_collectives=gloo",
        f"--config.data.root={files / 'data'}",
        "--config.data.synthetic.num_train=64",
        "--config.data.synthetic.num_val=32",
        f"--config.total_steps={TOTAL_STEPS}",
        "--config.log_every_steps=1",
        "--config.checkpoint_every_steps=4",
        f"--config.eval_every_steps={TOTAL_STEPS}",
    ]


def _env(files, **variables) -> dict[str, str]:
    return cpu_env(
        1,
        PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
        JAX_COMPILATION_CACHE_DIR=str(files / "cache"),
        **variables,
    )


@pytest.fixture(scope="module")
def slurm():
    _require(slurm_cluster.missing())
    with slurm_cluster.serve() as cluster:
        yield cluster


class Job:
    """A job submitted with ``sbatch scripts/slurm/train.sbatch``."""

    def __init__(self, slurm, files, workdir, *flags, sbatch=()):
        self.slurm, self.workdir = slurm, workdir
        self.output = files / f"{workdir.name}.out"
        env = _env(files, SLURM_CONF=slurm.env["SLURM_CONF"])
        env["PATH"] = os.pathsep.join([env["PATH"], slurm.env["PATH"]])
        done = subprocess.run(
            [
                "sbatch",
                *SBATCH_OPTIONS,
                *sbatch,
                f"--output={self.output}",
                "scripts/slurm/train.sbatch",
                *_train_flags(files, workdir),
                *flags,
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        self.id = done.stdout.split()[-1]

    def state(self) -> dict[str, str]:
        return self.slurm.job(self.id)

    def log(self) -> str:
        # The progress bar may be mid-character.
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def wait(self, states, timeout=420) -> dict[str, str]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.state()
            if job["JobState"] in states:
                return job
            time.sleep(1)
        self.slurm.run("scancel", self.id, check=False)
        pytest.fail(f"job {self.id} not {states} in {timeout} s: {job}\n{self.log()[-4000:]}")

    def wait_for_step(self, step, timeout=300) -> None:
        """Waits until the job's metrics record training step ``step``."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if max(_records(self.workdir, "train"), default=0) >= step:
                return
            time.sleep(0.5)
        self.slurm.run("scancel", self.id, check=False)
        pytest.fail(f"job {self.id} did not reach step {step}:\n{self.log()[-4000:]}")

    def processes(self) -> list[psutil.Process]:
        """This node's processes of the job: the batch script, srun, the tasks and their
        data-loader workers (every one has ``SLURM_JOB_ID`` in its environment)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("SLURM_JOB_ID") == self.id:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        return found


def _records(workdir, split) -> dict[int, dict]:
    """The last record of each step of ``split`` in ``metrics.jsonl``."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return {}
    with open(path) as f:
        records = [json.loads(line) for line in f if line.endswith("\n")]
    return {r["step"]: r for r in records if r["split"] == split}


def _losses(workdir) -> np.ndarray:
    train = _records(workdir, "train")
    assert sorted(train) == list(range(1, TOTAL_STEPS + 1)), sorted(train)
    return np.array([train[s]["loss"] for s in sorted(train)])


def _assert_same_run(workdir, reference) -> None:
    np.testing.assert_allclose(_losses(workdir), _losses(reference), rtol=1e-5, atol=1e-6)
    val, ref_val = _records(workdir, "val")[TOTAL_STEPS], _records(reference, "val")[TOTAL_STEPS]
    assert (val["top1"], val["top5"]) == (ref_val["top1"], ref_val["top5"])


@pytest.fixture(scope="module")
def reference(slurm, files):
    """An uninterrupted sbatch job: two tasks training to the end."""
    job = Job(slurm, files, files / "reference")
    state = job.wait({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})
    log = job.log()
    assert state["JobState"] == "COMPLETED", log[-4000:]
    assert "Final validation top-1 " in log and f"Outputs in {job.workdir}." in log, log[-4000:]
    return job


@pytest.mark.slow
def test_sbatch_job_says_what_it_found_and_trains_to_the_end(reference):
    """One compiling sbatch job (the module's reference run): 3 min on the 2-core machine while
    it was shared (load average about 10), the compilation included."""
    log = reference.log()
    for process in range(2):
        assert re.search(
            rf"SLURM job {reference.id} step 0 \(restart 0\), 2 tasks on 1 node\(s\): "
            rf"process {process} of 2, 1 local device\(s\): cpu",
            log,
        ), log[:3000]
    assert reference.processes() == []


@pytest.mark.slow
def test_requeued_job_saves_once_and_resumes_exactly(slurm, files, reference):
    """``scontrol requeue`` mid-run: both tasks stop at the same step, one checkpoint, and the
    requeued job (made eligible at once) ends with the reference's losses and accuracy. 3.6 min on
    the shared 2-core machine: two starts of the job from the compilation cache."""
    job = Job(slurm, files, files / "requeued")
    job.wait_for_step(2)
    slurm.run("scontrol", "requeue", job.id)
    pending = job.wait({"PENDING"}, timeout=60)
    assert pending["Restarts"] == "1", pending
    # A requeued job waits for a begin time about two minutes ahead; start it now.
    slurm.run("scontrol", "update", f"JobId={job.id}", "StartTime=now")
    state = job.wait({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})
    log = job.log()
    assert state["JobState"] == "COMPLETED", log[-4000:]
    saved = re.findall(r"SIGTERM: saved step (\d+); exiting\.", log)
    assert len(saved) == 1, log[-4000:]
    assert f"Resuming from step {saved[0]} " in log, log[-4000:]
    assert f"SLURM job {job.id} step 0 (restart 1)" in log, log[-4000:]
    assert "srun: error" not in log, log[-4000:]
    _assert_same_run(job.workdir, reference.workdir)


@pytest.mark.slow
def test_time_limit_signal_saves_before_the_limit(slurm, files, reference):
    """``--time=3 --signal=TERM@100``: SLURM sends SIGTERM 100 s before the limit (up to a minute
    earlier, by its own account); both tasks save the same step and the job ends COMPLETED before
    its limit. 2 min on the 2-core machine: a start from the compilation cache and the wait."""
    job = Job(
        slurm,
        files,
        files / "time_limit",
        "--config.total_steps=100000",
        sbatch=["--time=3", "--signal=TERM@100"],
    )
    state = job.wait({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=300)
    log = job.log()
    assert state["JobState"] == "COMPLETED", log[-4000:]
    saved = re.findall(r"SIGTERM: saved step (\d+); exiting\.", log)
    assert len(saved) == 1 and int(saved[0]) >= 1, log[-4000:]
    assert (job.workdir / "checkpoints" / saved[0]).is_dir(), log[-4000:]
    assert job.processes() == []


@pytest.mark.slow
def test_scancel_leaves_no_process_of_the_job(slurm, files, reference):
    """1.6 min on the shared 2-core machine: a job started from the compilation cache, cancelled
    mid-run, and the wait for its processes to go."""
    job = Job(slurm, files, files / "cancelled")
    job.wait_for_step(1)
    processes = job.processes()
    names = [p.name() for p in processes]
    # The batch script, srun, the two tasks and at least one data-loader worker of each.
    assert sum("python" in n for n in names) >= 4, names
    slurm.run("scancel", job.id)
    job.wait({"CANCELLED"}, timeout=60)
    _, alive = psutil.wait_procs(processes, timeout=60)
    assert alive == [] and job.processes() == [], alive


@pytest.mark.slow
def test_a_task_killed_alone_fails_the_job(slurm, files, reference):
    """``kill -9`` of task 1: srun names it in one line, task 0 stops within the heartbeat timeout
    (20 s here) and the job fails. 1.5 min on the shared 2-core machine: a start from the
    compilation cache and the timeout."""
    job = Job(slurm, files, files / "killed", "--heartbeat_timeout=20")
    job.wait_for_step(1)
    task1 = [
        p
        for p in job.processes()
        if p.environ().get("SLURM_PROCID") == "1" and "train.py" in " ".join(p.cmdline())
    ]
    assert task1, [p.cmdline() for p in job.processes()]
    task1[0].send_signal(signal.SIGKILL)  # the task; its loader workers follow it
    state = job.wait({"FAILED", "COMPLETED", "CANCELLED"}, timeout=90)
    assert state["JobState"] == "FAILED", state
    log = job.log()
    assert re.search(r"srun: error: \S+: task 1: Killed", log), log[-3000:]
    psutil.wait_procs(job.processes(), timeout=30)
    assert job.processes() == []


def _mpirun(files, workdir) -> subprocess.Popen:
    hostfile = files / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    env = _env(
        files,
        HOSTFILE=str(hostfile),
        PROCESSES="2",
        # The tests run as root; Open MPI refuses that without these.
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
    )
    return subprocess.Popen(
        ["scripts/mpi/train.sh", *_train_flags(files, workdir)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    """The output of ``proc``; its process group is killed if it runs past ``timeout``."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0]
        pytest.fail(f"{proc.args[0]} still running after {timeout} s:\n{out[-4000:]}")


@pytest.mark.slow
def test_mpi_script_stopped_by_sigterm_resumes_exactly(files, reference, tmp_path):
    """SIGTERM to ``scripts/mpi/train.sh`` mid-run (as a scheduler sends it): both processes save
    the same step and exit 0; the same command again ends with the reference's losses. 3.3 min
    on the shared 2-core machine: two starts of two processes from the compilation cache."""
    _require(
        None if shutil.which("mpirun") else f"Open MPI is not installed: {slurm_cluster.INSTALL}"
    )
    workdir = tmp_path / "mpi"
    proc = _mpirun(files, workdir)
    deadline = time.time() + 300
    while max(_records(workdir, "train"), default=0) < 2 and proc.poll() is None:
        if time.time() > deadline:
            _finish(proc, 0)
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc, 300)
    assert proc.returncode == 0, out[-4000:]
    saved = re.findall(r"SIGUSR1: saved step (\d+); exiting\.", out)
    assert len(saved) == 1, out[-4000:]
    for process in range(2):
        assert f"Open MPI, 2 ranks: process {process} of 2" in out, out[:3000]
    proc = _mpirun(files, workdir)
    out = _finish(proc, 420)
    assert proc.returncode == 0, out[-4000:]
    assert f"Resuming from step {saved[0]} " in out, out[-4000:]
    _assert_same_run(workdir, reference.workdir)


@pytest.mark.slow
def test_a_process_killed_alone_stops_the_other_with_one_line(files, tmp_path):
    """Two processes started by hand (``--coordinator_address``, no launcher to stop the rest),
    ``kill -9`` of process 1 after the checkpoint of step 4: process 0 stops within seconds with
    one error line and the hint to resume. 1.2 min on the 2-core machine: two processes start from
    the compilation cache.

    (Losing process 0, which hosts JAX's coordination service, ends the others at once with the
    runtime's own message "Terminating process because the JAX distributed service detected fatal
    errors".)"""
    workdir = tmp_path / "lost"
    config, _, *flags = _train_flags(files, workdir)
    port = local_servers.free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "train.py",
                f"--config={config}",
                f"--workdir={workdir}",
                *flags,
                "--config.total_steps=100",  # far beyond the kill
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            env=_env(files),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        for i in range(2)
    ]
    try:
        deadline = time.time() + 300
        while max(_records(workdir, "train"), default=0) < 5:
            assert time.time() < deadline and procs[0].poll() is None, procs[0].poll()
            time.sleep(0.2)
        procs[1].kill()
        procs[1].wait()
        killed = time.time()
        _, err = procs[0].communicate(timeout=120)
        stopped = time.time() - killed
    finally:
        for proc in procs:
            local_servers.stop(proc, timeout=10)
    assert procs[0].returncode == 2, err[-4000:]
    assert stopped < 20, stopped  # the heartbeat timeout is 100 s
    lines = [line for line in err.splitlines() if line.startswith("[process 0] ")]
    assert re.fullmatch(
        r"\[process 0\] error: lost another process of this run \(.*by peer.*\)", lines[0]
    ), err[-4000:]
    assert re.fullmatch(
        r"\[process 0\] hint: that process stopped first and its log says why; the same command "
        r"on every host resumes from step (?:4|8)\.",
        lines[1],
    ), err[-4000:]
    assert "Traceback" not in err and "Check failure" not in err, err[-4000:]
