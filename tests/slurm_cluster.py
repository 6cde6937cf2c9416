"""A one-node SLURM cluster on localhost for tests: munged, slurmctld and slurmd, started as root
with a throw-away configuration, key, state and spool folder, on free ports.

The client commands (``sbatch``, ``scontrol``, ``squeue``, ``scancel``) reach it through
``SLURM_CONF`` (see :attr:`SlurmCluster.env`); the configuration points them at this munged's
socket. Only the three daemons started here are stopped, by their process ids. ``KillWait`` (the
time between a job's SIGTERM and its SIGKILL) is 120 s instead of SLURM's default 30 s: the
tests' machine may be busy.
"""

import contextlib
import os
import pathlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import local_servers

INSTALL = "apt-get update && apt-get install -y slurm-wlm munge openmpi-bin"
_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])  # the daemons


def missing() -> str | None:
    """Why the cluster cannot start here (a sentence with the install command), or None."""
    needed = ["munged", "slurmctld", "slurmd", "sbatch", "scontrol"]
    absent = [name for name in needed if not shutil.which(name, path=_PATH)]
    if absent:
        return f"SLURM is not installed ({', '.join(absent)} not found): {INSTALL}"
    if os.geteuid() != 0:
        return "the SLURM daemons of the tests run as root"
    return None


_CONF = """\
ClusterName=teajaxtest
FirstJobId={first_job_id}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
JobRequeue=1
ReturnToService=2
KillWait=120
SchedulerParameters=sched_interval=1
SchedulerType=sched/builtin
JobCompType=jobcomp/none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """A running one-node cluster: :meth:`run` calls its client commands."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.env = dict(os.environ, SLURM_CONF=str(root / "slurm.conf"), PATH=_PATH)

    def run(self, *args: str, check: bool = True) -> str:
        """Runs a client command (``sbatch``, ``scontrol``, ...); returns its output."""
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        if check and done.returncode:
            raise RuntimeError(f"{' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (``JobState``, ``Restarts``, ``ExitCode``, ...)."""
        out = self.run("scontrol", "show", "job", "-o", job_id)
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    def logs(self) -> str:
        return "".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.root.glob("*.log"))
        )


def _wait_for(predicate, timeout: float, what: str, cluster: SlurmCluster) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise RuntimeError(f"SLURM: {what} within {timeout} s.\n{cluster.logs()}")


@contextlib.contextmanager
def serve() -> Iterator[SlurmCluster]:
    """Starts the daemons; stops them and deletes their folder at the end."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="tea_jax_slurm_"))
    root.chmod(0o755)  # munged refuses a socket folder that others can write to
    for name in ("state", "spool"):
        (root / name).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname()
    (root / "slurm.conf").write_text(
        _CONF.format(
            host=host,
            root=root,
            ctld_port=local_servers.free_port(),
            slurmd_port=local_servers.free_port(),
            cpus=os.cpu_count(),
            # JAX's coordinator port follows the job id: clusters started side by side differ.
            first_job_id=random.randrange(1, 1_000_000),
        )
    )
    cluster = SlurmCluster(root)
    daemons: list[subprocess.Popen] = []
    try:
        munge = [
            "munged", "--foreground", "--force", f"--socket={root}/munge.socket",
            f"--key-file={key}", f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
            f"--seed-file={root}/munged.seed",
        ]  # fmt: skip
        for command in (munge, ["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
            log = open(root / f"{command[0]}.out", "w")  # noqa: SIM115 (the daemon holds it)
            daemons.append(
                subprocess.Popen(
                    command, env=cluster.env, stdout=log, stderr=subprocess.STDOUT, cwd=root
                )
            )
            if command[0] == "munged":
                _wait_for(lambda: (root / "munge.socket").exists(), 30, "no munged", cluster)
        _wait_for(
            lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%T", check=False),
            60,
            "the node is not idle",
            cluster,
        )
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            for job in cluster.run("squeue", "-h", "-o", "%i", check=False).split():
                cluster.run("scancel", job, check=False)
        for daemon in reversed(daemons):
            local_servers.stop(daemon, timeout=30)
        shutil.rmtree(root, ignore_errors=True)
