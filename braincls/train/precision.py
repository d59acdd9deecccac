"""Which devices and which numeric precision training uses on this machine."""

from __future__ import annotations

import os
from pathlib import Path


def accelerators() -> list[str]:
    """Names of the GPUs the Keras backend sees (empty on CPU)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return []


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX-BF16 tiles (Intel Sapphire Rapids and later; Linux only)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(
        line.startswith("flags") and "amx_bf16" in line.split() for line in cpuinfo.splitlines()
    )


def onednn_enabled() -> bool:
    """Whether TensorFlow's oneDNN kernels are on (read by TensorFlow at import from
    ``TF_ENABLE_ONEDNN_OPTS``; on by default on x86 Linux)."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")


def precision_policy(setting: str, gpus: list[str]) -> str:
    """The Keras dtype policy for ``TrainConfig.mixed_precision`` on this machine.

    bfloat16 pays only with oneDNN on a CPU with AMX (measured here: about 2x float32 with
    oneDNN); without oneDNN, TensorFlow's bfloat16 convolutions are some 15x slower than float32.
    """
    import keras

    if setting == "off":
        return "float32"
    if setting == "on":
        return "mixed_float16"
    if setting == "bfloat16":
        return "mixed_bfloat16"
    if gpus:
        return "mixed_float16"
    if keras.backend.backend() == "tensorflow" and onednn_enabled() and cpu_has_amx_bf16():
        return "mixed_bfloat16"
    return "float32"
