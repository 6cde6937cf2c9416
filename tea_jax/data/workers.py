"""Loader worker processes that end with the process that started them.

grain's worker processes wait on queues that only the main process drains or closes. When the
main process dies by a signal it cannot handle (SIGKILL: the OOM killer, a hard preemption), the
workers would wait forever, and with them the ``multiprocessing`` resource tracker, whose pipe
they keep open; the tracker unlinks the loader's ``/dev/shm`` segments only once every holder
of that pipe has exited.
"""

import functools
import os
import threading
import time

_POLL_S = 0.5


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_POLL_S)
    os._exit(1)


def _exit_with_parent(worker_index: int, num_workers: int, *, parent: int) -> None:
    del worker_index, num_workers
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), name="parent-watchdog", daemon=True).start()


def exit_with_parent_init() -> functools.partial:
    """A grain ``worker_init_fn`` that ends each worker within a second of this process's death.

    Call it in the process that starts the workers. A daemon thread in each worker polls the
    parent's pid (it changes when the parent dies and the worker is re-parented); a worker whose
    parent died before the worker got this far exits at once. Unlike Linux's parent-death signal,
    it does not fire when merely the thread that started the worker ends.
    """
    return functools.partial(_exit_with_parent, parent=os.getpid())
