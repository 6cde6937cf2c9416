"""Facts of the accelerators this project targets, and the names of TPU slices and GPU sets.

One place for what a device is: its memory, dense peak FLOP/s, memory bandwidth and, for GPUs,
the description XLA compiles for (``stream_executor.GpuTargetConfigProto``). ``tea_jax.flops``
reads the peaks; ``python -m tea_jax.train.aot`` compiles for a :class:`Target` on any machine.

Sources: TPU memory, peak and bandwidth per chip from Google Cloud's system-architecture pages
(https://cloud.google.com/tpu/docs/v4, .../v5e, .../v5p, .../v6e). GPU peaks from NVIDIA's data
sheets (H100 SXM, H200, A100: dense tensor-core bfloat16 and TensorFloat-32). GPU memory,
bandwidth, SM count, clock and shared memory from XLA's target descriptions
(https://github.com/openxla/xla/tree/main/xla/backends/gpu/target_config/specs: h100_sxm.txtpb,
h100_pcie.txtpb, h200.txtpb, a100_sxm_40.txtpb, a100_sxm_80.txtpb); :func:`gpu_target_config`
writes the subset of their fields that jaxlib 0.10's compiler reads.
"""

import dataclasses
import math
import re

from tea_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class GpuSpec:
    """The fields of XLA's description of a GPU that its compiler reads, beside the memory."""

    name: str
    sms: int
    compute_capability: int
    clock_ghz: float
    shared_memory_per_sm: int
    shared_memory_per_block_optin: int
    l2_bytes: int
    fp32_units_per_sm: int


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator chip (a TPU chip, or a GPU).

    Attributes:
      key: the name used in target names (``v5e``, ``h100``).
      device_kind: a pattern matching ``jax.Device.device_kind`` (full match).
      memory_bytes: device memory (HBM).
      peak_flops: dense peak FLOP/s by compute dtype, as JAX runs it at its default matmul
        precision: float32 products run as TensorFloat-32 on A100/H100/H200 and as one bfloat16
        pass on TPUs.
      bandwidth: memory bandwidth in bytes/s.
      usable_fraction: the part of the memory a JAX process may use by default: JAX preallocates
        75% of a GPU's memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``); a TPU's is all usable.
      gpu: for GPUs, the rest of XLA's description.
    """

    key: str
    device_kind: str
    memory_bytes: int
    peak_flops: dict[str, float]
    bandwidth: float
    usable_fraction: float = 1.0
    gpu: "GpuSpec | None" = None

    @property
    def usable_bytes(self) -> int:
        return int(self.memory_bytes * self.usable_fraction)


GiB = 1 << 30
_GPU_FRACTION = 0.75

CHIPS = (
    Chip(
        "h100-pcie",
        r"NVIDIA H100.*PCIe.*",
        84_942_979_072,
        {"bfloat16": 756e12, "float32": 378e12},
        2.03904e12,
        _GPU_FRACTION,
        GpuSpec("NVIDIA H100 PCIe", 114, 9, 1.755, 233472, 232448, 52428800, 128),
    ),
    Chip(
        "h100",
        r"NVIDIA H100.*",
        84_942_979_072,
        {"bfloat16": 989e12, "float32": 495e12},
        3.35232e12,
        _GPU_FRACTION,
        GpuSpec("NVIDIA H100 80GB HBM3", 132, 9, 1.98, 233472, 232448, 52428800, 128),
    ),
    Chip(
        "h200",
        r"NVIDIA H200.*",
        151_397_597_184,
        {"bfloat16": 989e12, "float32": 495e12},
        4.8e12,
        _GPU_FRACTION,
        GpuSpec("NVIDIA H200 141GB HBM3e", 132, 9, 1.98, 233472, 232448, 52428800, 128),
    ),
    Chip(
        "a100-40gb",
        r"NVIDIA A100.*40GB",
        42_331_013_120,
        {"bfloat16": 312e12, "float32": 156e12},
        1.5552e12,
        _GPU_FRACTION,
        GpuSpec("NVIDIA A100-SXM4-40GB", 108, 8, 1.41, 167936, 166912, 41943040, 64),
    ),
    Chip(
        "a100-80gb",
        r"NVIDIA A100.*",
        85_100_068_864,
        {"bfloat16": 312e12, "float32": 156e12},
        2.03904e12,
        _GPU_FRACTION,
        GpuSpec("NVIDIA A100-SXM4-80GB", 108, 8, 1.41, 167936, 166912, 41943040, 64),
    ),
    Chip("v4", r"TPU v4", 32 * GiB, {"bfloat16": 275e12, "float32": 275e12}, 1.228e12),
    Chip("v5e", r"TPU v5 lite|TPU v5e", 16 * GiB, {"bfloat16": 197e12, "float32": 197e12}, 8.19e11),
    Chip("v5p", r"TPU v5p?", 95 * GiB, {"bfloat16": 459e12, "float32": 459e12}, 2.765e12),
    Chip("v6e", r"TPU v6 lite|TPU v6e", 32 * GiB, {"bfloat16": 918e12, "float32": 918e12}, 1.64e12),
)
_BY_KEY = {chip.key: chip for chip in CHIPS}
_ALIASES = {"v5litepod": "v5e", "v6litepod": "v6e", "h100-80gb": "h100", "a100": "a100-40gb"}
# TPU generations whose accelerator-type number counts TensorCores (two per chip, one JAX device
# per chip as their megacore runtime has); v5e and v6e count chips.
_MEGACORE = ("v4", "v5p")


def gpu_target_config(chip: Chip) -> str:
    """The ``stream_executor.GpuTargetConfigProto`` (text format) that XLA compiles for."""
    g = chip.gpu
    return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: {g.shared_memory_per_sm}
  threads_per_core_limit: 2048
  core_count: {g.sms}
  fpus_per_core: {g.fp32_units_per_sm}
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {int(chip.bandwidth)}
  l2_cache_size: {g.l2_bytes}
  clock_rate_ghz: {g.clock_ghz}
  device_memory_size: {chip.memory_bytes}
  shared_memory_per_block_optin: {g.shared_memory_per_block_optin}
  cuda_compute_capability {{ major: {g.compute_capability} }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 8 patch: 0 }}
device_description_str: "{g.name}"
"""


@dataclasses.dataclass(frozen=True)
class Target:
    """A named set of devices to compile for.

    Attributes:
      name: as the user wrote it.
      chip: the device.
      platform: ``'tpu'`` or ``'cuda'``.
      devices: number of JAX devices (TPU chips, GPUs).
      topology: the topology string of ``jax.experimental.topologies.get_topology_desc``:
        ``v5e:4x4`` for TPUs, ``PARTITIONSxHOSTSxDEVICES`` for GPUs.
    """

    name: str
    chip: Chip
    platform: str
    devices: int
    topology: str

    def topology_kwargs(self) -> dict:
        """Keyword arguments of ``get_topology_desc`` for this target."""
        if self.platform == "tpu":
            kwargs = {"topology_name": self.topology, "platform": "tpu"}
            if self.chip.key in _MEGACORE:
                kwargs["chip_config_name"] = "megacore"
            return kwargs
        return {
            "topology_name": "",
            "platform": "cuda",
            "target_config": gpu_target_config(self.chip),
            "topology": self.topology,
        }


def _tpu_shape(chip: str, chips: int) -> str:
    """The chip grid of a slice: 2-D for v5e/v6e, 3-D (starting at 2x2x1) for v4/v5p."""
    if chip in _MEGACORE:
        dims = [2, 2, 1]
        while math.prod(dims) < chips:
            smallest = min(dims)
            dims[max(i for i, d in enumerate(dims) if d == smallest)] *= 2
    else:
        side = 1 << (chips.bit_length() - 1) // 2
        dims = [side, chips // side]
    return "x".join(map(str, dims))


def known_targets() -> str:
    """Examples of every accepted form, for messages."""
    tpus = ", ".join(f"{k}-N" for k in ("v4", "v5e", "v5litepod", "v5p", "v6e"))
    gpus = ", ".join(f"{c.key}xN" for c in CHIPS if c.gpu)
    return f"TPU slices {tpus} (or v5e:4x4), GPUs {gpus} (or KINDxNxHOSTS)"


def parse_target(name: str) -> Target:
    """The target named ``name``: a TPU slice by its accelerator type (``v5e-16``,
    ``v5litepod-16``, ``v4-32``, ``v5p-128``, ``v6e-256``) or topology (``v5e:4x4``), or GPUs by
    kind and count (``h100x8``; ``h100x8x2`` is two hosts of 8).

    Raises:
      UserError: an unknown device or a count it does not come in, naming the known targets.
    """
    hint = f"Known targets: {known_targets()}."
    text = name.strip().lower()
    if m := re.fullmatch(r"(v\w+?)(?:litepod)?:(\d+(?:x\d+)*)", text):
        chip = _BY_KEY.get(_ALIASES.get(m[1], m[1]))
        if chip is None or chip.gpu:
            raise UserError(f"--target {name}: unknown TPU generation {m[1]!r}.", hint=hint)
        chips = math.prod(int(d) for d in m[2].split("x"))
        return Target(name, chip, "tpu", chips, f"{chip.key}:{m[2]}")
    if m := re.fullmatch(r"(v\w+?)-(\d+)", text):
        chip = _BY_KEY.get(_ALIASES.get(m[1], m[1]))
        if chip is None or chip.gpu:
            raise UserError(f"--target {name}: unknown TPU generation {m[1]!r}.", hint=hint)
        count = int(m[2])
        chips = count // 2 if chip.key in _MEGACORE else count
        if chips < 4 or chips & (chips - 1):
            what = "TensorCores (two per chip)" if chip.key in _MEGACORE else "chips"
            raise UserError(
                f"--target {name}: {chip.key} slices compile here with a power of two of at "
                f"least {8 if chip.key in _MEGACORE else 4} {what}.",
                hint=hint,
            )
        return Target(name, chip, "tpu", chips, f"{chip.key}:{_tpu_shape(chip.key, chips)}")
    if m := re.fullmatch(r"([a-z0-9-]+?)x(\d+)(?:x(\d+))?", text):
        chip = _BY_KEY.get(_ALIASES.get(m[1], m[1]))
        if chip is None or not chip.gpu:
            raise UserError(f"--target {name}: unknown GPU {m[1]!r}.", hint=hint)
        per_host, hosts = int(m[2]), int(m[3] or 1)
        if per_host < 1 or hosts < 1:
            raise UserError(f"--target {name}: counts must be at least 1.", hint=hint)
        return Target(name, chip, "cuda", per_host * hosts, f"1x{hosts}x{per_host}")
    raise UserError(f"--target {name}: not a TPU slice or GPU set.", hint=hint)
