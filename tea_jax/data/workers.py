"""Loader worker processes that end with the process that started them.

grain's worker processes wait on queues that only the main process drains or closes. When the
main process dies by a signal it cannot handle (SIGKILL: the OOM killer, a hard preemption), the
workers would wait forever, and with them the ``multiprocessing`` resource tracker, whose pipe
they keep open; the tracker unlinks the loader's ``/dev/shm`` segments only once every holder
of that pipe has exited.
"""

import os
import threading
import time

_POLL_S = 0.5


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_POLL_S)
    os._exit(1)


def exit_with_parent(worker_index: int, num_workers: int) -> None:
    """grain ``worker_init_fn``: ends this worker within a second of its parent's death.

    A daemon thread polls the parent's pid (it changes when the parent dies and the worker is
    re-parented). Unlike Linux's parent-death signal, it does not fire when merely the thread
    that started the worker ends.
    """
    del worker_index, num_workers
    parent = os.getppid()
    threading.Thread(target=_watch, args=(parent,), name="parent-watchdog", daemon=True).start()
