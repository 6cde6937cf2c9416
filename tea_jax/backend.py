"""JAX stays on the CPU on a machine without an accelerator, whatever plugins are installed.

With ``libtpu`` or JAX's CUDA plugin installed (the ``tpu-compile``/``gpu-compile`` extras, which
compile for TPUs and GPUs on any machine), JAX would look for their devices at start-up and print
the failure of each search. Where no accelerator device file exists and ``JAX_PLATFORMS`` is not
set, JAX is pointed at the CPU instead, as it would have settled on without the plugins.
"""

import glob
import os

import jax

# Device files of TPUs (accel: v4/v5e; vfio: v5p/v6e), NVIDIA GPUs (dxg: under WSL2), AMD GPUs.
_ACCELERATOR_FILES = (
    "/dev/accel*",
    "/dev/vfio/[0-9]*",
    "/dev/nvidia[0-9]*",
    "/dev/dxg",
    "/dev/kfd",
)


def has_accelerator() -> bool:
    """Whether a TPU or GPU device file exists on this machine."""
    return any(glob.glob(pattern) for pattern in _ACCELERATOR_FILES)


def use_cpu_without_accelerator() -> None:
    """Sets ``jax_platforms`` to ``cpu`` where ``JAX_PLATFORMS`` is unset and no accelerator
    device file exists (before JAX starts its backends)."""
    if "JAX_PLATFORMS" not in os.environ and not has_accelerator():
        jax.config.update("jax_platforms", "cpu")
