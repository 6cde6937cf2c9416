"""How the tests compile: fast, since nearly all of them are compile-bound on a CPU.

XLA's LLVM optimisations cost more than they save on the tests' tiny networks. `conftest.py`
turns them down in every test process; subprocesses get the same flags from `cpu_env`. The rare
compute-bound program compiles with `OPTIMIZED` instead.
"""

import os

FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
# Compiler options restoring XLA's defaults, for `jax.jit(f).lower(...).compile(OPTIMIZED)`.
OPTIMIZED = {"xla_backend_optimization_level": 3, "xla_llvm_disable_expensive_passes": False}


def cpu_env(devices: int | None = None, **variables: str) -> dict[str, str]:
    """This process's environment for a CPU subprocess, with `devices` simulated devices."""
    flags = list(FAST_COMPILE)
    if devices is not None:
        flags.insert(0, f"--xla_force_host_platform_device_count={devices}")
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags), **variables)
