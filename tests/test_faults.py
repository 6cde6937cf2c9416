"""Faults: killed runs leave no processes or shared memory behind."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
    )


def _shm_segments(pid):
    """Names of the /dev/shm files mapped by process ``pid``."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return {line.split()[-1] for line in f if "/dev/shm/" in line}
    except (FileNotFoundError, ProcessLookupError):
        return set()


def _alive(proc):
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for_line(proc, text, timeout=240):
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return
    proc.kill()
    pytest.fail(f"no '{text}' from the subprocess:\n" + "".join(lines)[-4000:])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_leaves_no_loader_process_or_shared_memory(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "loader", str(tmp_path)],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for_line(proc, "LOADING")
    main = psutil.Process(proc.pid)
    children = main.children(recursive=True)
    assert len(children) >= 3, children  # two workers and the resource tracker
    segments = set().union(*(_shm_segments(p.pid) for p in [main, *children]))
    assert segments, "the loader holds no shared memory: nothing to check"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline:
        left = [p for p in children if _alive(p)]
        kept = {s for s in segments if os.path.exists(s)}
        if not left and not kept:
            break
        time.sleep(0.2)
    for p in left:
        p.kill()
    assert not left, f"alive 15 s after the main process was killed: {left}"
    assert not kept, f"shared memory left behind: {sorted(kept)}"


def _iterate_loader(workdir):
    """Subprocess: iterates a synthetic training loader with two workers until killed."""
    from tea_jax import data

    cfg = data.synthetic_config(os.path.join(workdir, "data"))
    cfg.synthetic.num_train, cfg.synthetic.num_val = 8, 8
    cfg.num_workers = 2
    cfg.worker_buffer_size = 4
    loader = data.create_loader(cfg, "train", batch_size=2, num_segments=4, seed=0)
    batches = []
    for batch in loader:
        batches = [*batches[-3:], batch]  # keeps a few batches' shared memory mapped
        print("LOADING", flush=True)
        time.sleep(0.05)


if __name__ == "__main__":
    {"loader": _iterate_loader}[sys.argv[1]](*sys.argv[2:])
