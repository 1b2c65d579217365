"""The device check that picks precision and compiler: from the compute capability, never from
``torch.cuda.is_bf16_supported()``; tested on CPU with the properties of Kaggle's GPUs, and on a real GPU when there
is one."""

from __future__ import annotations

import pytest
import torch

from kagglecv.core.errors import KagglecvError
from kagglecv.nn.runtime import (
    CudaDevice,
    amp_name,
    autocast_dtype,
    check_compile,
    check_cuda_kernels,
)

CUDA = torch.device("cuda")
P100, T4 = CudaDevice("Tesla P100-PCIE-16GB", (6, 0)), CudaDevice("Tesla T4", (7, 5))
A100, H100 = CudaDevice("NVIDIA A100-SXM4-40GB", (8, 0)), CudaDevice("NVIDIA H100 80GB HBM3", (9, 0))
CU128_ARCHES = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # torch's CUDA 12.8 wheels
CU118_ARCHES = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


def test_a_build_without_kernels_for_the_device_is_refused_before_any_work():
    with pytest.raises(KagglecvError, match=r"no kernels for sm_60 \(Tesla P100-PCIE-16GB\).*choose another GPU"):
        check_cuda_kernels(P100, CU128_ARCHES)
    check_cuda_kernels(P100, CU118_ARCHES)
    for gpu in (T4, A100, H100):  # same major architecture is enough, as torch's own check says
        check_cuda_kernels(gpu, CU128_ARCHES)
    check_cuda_kernels(CudaDevice("NVIDIA L4", (8, 9)), ["sm_80", "sm_90a"])


def test_auto_precision_follows_the_compute_capability():
    assert autocast_dtype("auto", CUDA, P100) == torch.float16
    assert autocast_dtype("auto", CUDA, T4) == torch.float16  # is_bf16_supported() may say True: emulated, slow
    assert autocast_dtype("auto", CUDA, A100) == torch.bfloat16
    assert autocast_dtype("auto", CUDA, H100) == torch.bfloat16
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("off", CUDA, H100) is None
    assert autocast_dtype("fp16", CUDA, H100) == torch.float16
    with pytest.raises(KagglecvError, match=r"bf16 on sm_75 \(Tesla T4\) is emulated"):
        autocast_dtype("bf16", CUDA, T4)
    assert [amp_name(autocast_dtype("auto", CUDA, gpu)) for gpu in (T4, A100)] == ["fp16", "bf16"]


def test_compile_is_refused_where_triton_cannot_run():
    with pytest.raises(KagglecvError, match=r"train.compile: .*Triton.* sm_60"):
        check_compile(True, CUDA, P100)
    for gpu in (T4, A100, H100):
        check_compile(True, CUDA, gpu)
    check_compile(False, CUDA, P100)
    check_compile(True, torch.device("cpu"))


@pytest.mark.gpu
def test_on_a_real_gpu_the_check_passes_and_matches_its_capability():
    gpu = CudaDevice.of(torch.device("cuda"))
    check_cuda_kernels(gpu, torch.cuda.get_arch_list())
    expected = torch.bfloat16 if gpu.capability >= (8, 0) else torch.float16
    assert autocast_dtype("auto", torch.device("cuda")) == expected
