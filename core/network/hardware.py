"""The processor a result is computed on: whether it does bfloat16 natively, and its name for the records.

Kept apart from :mod:`core.network.inference` (which reads bundles) so that :mod:`core.network.bundle` can name the
processor in a model card without importing inference: both import this module, neither the other for it.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["machine", "native_bfloat16"]


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), where bfloat16 inference is the faster."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except Exception:  # pragma: no cover - private torch helpers moved: fall back to float32
        return False


def machine() -> dict[str, str]:
    """The processor that computed a result, as recorded beside the library versions.

    Why: the same code, data and seed give the same labels on one machine, but not bit for bit on another: the
    convolution kernels torch picks depend on the instruction set (``cpu_capability``: AVX2, AVX-512, AVX-512 BF16 or
    AMX), and so does their rounding. On the accuracy family, two 2-core machines (AMD EPYC with AVX-512 BF16, Intel
    Xeon with AMX) gave worst-step Dice up to 0.009 apart on the same variant and seed, the worst phase up to 0.019 and
    the reaction extent's error up to 4 points (README, "Accuracy on data it was never tuned on"). A result's record
    names its processor so that a reader knows which.
    """
    import platform

    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux
        pass
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # pragma: no cover - older torch
        capability = "unknown"
    return {"cpu": name or platform.processor() or platform.machine() or "unknown", "cpu_capability": capability,
            "bfloat16_native": str(native_bfloat16()).lower(), "torch_threads": str(torch.get_num_threads())}
