"""Does the compiled train step fit the devices? Answered before anything is allocated.

The step is compiled for abstract arguments; XLA's memory analysis gives the
bytes per device, which are compared with what the device has. When it does
not fit, the error names overrides of batch size and sequence length that
would, assuming activation memory scales with batch x length.
"""

from __future__ import annotations

import jax
import ml_collections

from bert_jax.errors import ConfigError

GIB = 1024**3


def device_memory_bytes(device=None) -> int:
    """Memory one device can use: the accelerator's limit, or this host's RAM shared by its CPU devices."""
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    import psutil

    return int(psutil.virtual_memory().available // max(jax.local_device_count(), 1))


def step_memory_bytes(compiled) -> tuple[int, int]:
    """(fixed, activation) bytes per device: arguments/outputs, and temporaries that scale with the batch."""
    m = compiled.memory_analysis()
    fixed = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.generated_code_size_in_bytes
    return int(fixed), int(m.temp_size_in_bytes)


def check_fits(
    compiled,
    config: ml_collections.ConfigDict,
    available: int | None = None,
    headroom: float = 0.9,
    batch_devices: int | None = None,
) -> None:
    """Raises a ConfigError naming the needed and available memory and overrides that fit.

    `batch_devices` (the mesh's data x fsdp devices; default all of this process's view) bounds the suggested
    batch from below, so a plan for a topology this machine does not have suggests batches its mesh can split.
    """
    available = device_memory_bytes() if available is None else available
    fixed, activations = step_memory_bytes(compiled)
    budget = available * headroom
    if fixed + activations <= budget:
        return
    suggestion = _suggest(config, fixed, activations, budget, batch_devices or jax.device_count())
    raise ConfigError(
        f"the train step needs {(fixed + activations) / GIB:.1f} GiB per device "
        f"({fixed / GIB:.1f} GiB parameters, optimizer state and batch, {activations / GIB:.1f} GiB activations) "
        f"but a device has {available / GIB:.1f} GiB; "
        + (
            f"overrides that fit: {suggestion}"
            if suggestion
            else "the parameters alone do not fit: use a smaller model or more devices"
        )
    )


def _suggest(config, fixed: int, activations: int, budget: float, devices: int) -> str:
    """Largest power-of-two batch (at the configured length, and at 128) whose estimate fits."""
    batch, length = config.batch_size, config.max_seq_length
    options = []
    for new_length in sorted({length, min(length, 128)}, reverse=True):
        new_batch = batch
        while new_batch > devices:
            new_batch //= 2
            if fixed + activations * (new_batch * new_length) / (batch * length) <= budget * 0.8:
                flags = f"--config.batch_size={new_batch}"
                if new_length != length:
                    flags += f" --config.max_seq_length={new_length}"
                options.append(f"`{flags}`")
                break
    if not options:
        return ""
    return (
        " or ".join(options) + "; --config.model.remat_policy=nothing_saveable and --config.grad_accum_steps=N "
        "keep a larger batch in the same memory"
    )
