"""Where training runs: device, distributed set-up, seeding and the RNG state a resumed run restores."""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from kagglecv.core.errors import KagglecvError


@dataclass
class Runtime:
    """The process's place in a (possibly distributed) job."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_runtime(device: str = "auto") -> Runtime:
    """Pick the device; under torchrun (WORLD_SIZE > 1) join the process group (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        check_cuda_kernels(CudaDevice.of(torch_device), torch.cuda.get_arch_list())
    if torch_device.type == "cuda" and world_size > 1:
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    return Runtime(torch_device, rank, world_size)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) generator states as tensors and plain values (weights-only loadable)."""
    numpy_state = np.random.get_state()
    python_version, python_internal, python_gauss = random.getstate()
    state = {
        "python": torch.tensor(python_internal, dtype=torch.int64),
        "python_gauss": python_gauss,
        "python_version": python_version,
        "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_pos": int(numpy_state[2]),
        "numpy_has_gauss": int(numpy_state[3]),
        "numpy_gauss": float(numpy_state[4]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate((state["python_version"], tuple(state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class CudaDevice:
    """What decides precision and compiler on a GPU: its name and compute capability (major, minor)."""

    name: str
    capability: tuple[int, int]

    @property
    def sm(self) -> str:
        return f"sm_{self.capability[0]}{self.capability[1]}"

    @classmethod
    def of(cls, device: torch.device) -> "CudaDevice":
        return cls(torch.cuda.get_device_name(device), tuple(torch.cuda.get_device_capability(device)))


def check_cuda_kernels(gpu: CudaDevice, arch_list: list[str]) -> None:
    """An error before any work when this torch build ships no kernel that runs on ``gpu``, by torch's own rule
    (``torch.cuda._check_cubins``: an ``sm_XY`` of the device's major version). ``cuda.is_available()`` is True on
    such a device (a Tesla P100, sm_60, under a CUDA 12.8 build) and the first kernel fails."""
    built = [int("".join(re.findall(r"\d+", arch.split("_", 1)[1]))) for arch in arch_list if arch.startswith("sm_")]
    if built and not any(sm // 10 == gpu.capability[0] for sm in built):
        raise KagglecvError(f"this torch build has no kernels for {gpu.sm} ({gpu.name}): it ships "
                            f"{', '.join(f'sm_{sm}' for sm in built)}; choose another GPU (on Kaggle: T4) or install "
                            f"a torch built for {gpu.sm}")


def autocast_dtype(amp: str, device: torch.device, gpu: CudaDevice | None = None) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device``, for training and prediction alike (None: full precision).

    ``auto`` decides from the compute capability, not from ``torch.cuda.is_bf16_supported()`` (which reports True
    on a T4 through slow emulation): bf16 from sm_80, fp16 (with the grad scaler) below; off on a CPU. ``bf16``
    asked for on a GPU without native bf16 is refused; ``fp16`` and CPU ``bf16`` are used as asked.
    """
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        return torch.float16 if amp == "fp16" else torch.bfloat16
    gpu = gpu or CudaDevice.of(device)
    native_bf16 = gpu.capability >= (8, 0)
    if amp == "bf16" and not native_bf16:
        raise KagglecvError(f"train.amp: bf16 on {gpu.sm} ({gpu.name}) is emulated (native bf16 starts at sm_80) and "
                            "slower than fp16; set train.amp: fp16 or auto")
    if amp == "fp16" or (amp == "auto" and not native_bf16):
        return torch.float16
    return torch.bfloat16


def check_compile(compile_model: bool, device: torch.device, gpu: CudaDevice | None = None) -> None:
    """``train.compile`` where torch.compile can run: on a GPU, Triton needs sm_70 or newer."""
    if not compile_model or device.type != "cuda":
        return
    gpu = gpu or CudaDevice.of(device)
    if gpu.capability < (7, 0):
        raise KagglecvError(f"train.compile: torch.compile's GPU compiler (Triton) needs sm_70 or newer, this is "
                            f"{gpu.sm} ({gpu.name}); set train.compile: false")


def amp_name(dtype: torch.dtype | None) -> str:
    """How ``run.json`` and the log name the autocast dtype chosen."""
    return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def all_gather(obj, runtime: Runtime) -> list:
    """Every rank's ``obj`` in rank order (just ``[obj]`` when not distributed)."""
    if not runtime.distributed:
        return [obj]
    gathered: list = [None] * runtime.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()
