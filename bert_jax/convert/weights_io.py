"""Reading and writing weight files without executing code.

safetensors is parsed here directly (an 8-byte header length, a JSON header,
raw little-endian bytes) so that bfloat16 tensors load through `ml_dtypes`
and every failure names the file. `pytorch_model.bin` is read only through
`torch.load(weights_only=True)`, which refuses pickled code.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Mapping

import ml_dtypes
import numpy as np

from bert_jax import fileio
from bert_jax.errors import CheckpointError

DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
DTYPE_NAMES = {np.dtype(v): k for k, v in DTYPES.items()}

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of one .safetensors file as numpy arrays (copies, file closed)."""
    try:
        with fileio.open(path, "rb") as f:  # local or on a bucket (gs://)
            data = f.read()
        (header_len,) = struct.unpack("<Q", data[:8])
        if header_len > len(data) - 8:
            raise ValueError(f"header length {header_len} exceeds the file size {len(data)}")
        header = json.loads(data[8 : 8 + header_len])
        body = memoryview(data)[8 + header_len :]
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            if end > len(body):
                raise ValueError(f"tensor {name!r} ends at byte {end}, past the end of the data ({len(body)})")
            dtype = DTYPES.get(info["dtype"])
            if dtype is None:
                raise ValueError(f"tensor {name!r} has unsupported dtype {info['dtype']}")
            out[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(info["shape"]).copy()
        return out
    except (OSError, ValueError, KeyError, struct.error, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray], metadata: dict | None = None) -> None:
    """Writes tensors to `path` atomically (a temporary file renamed into place)."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        if array.dtype not in DTYPE_NAMES:
            raise ValueError(f"tensor {name!r}: dtype {array.dtype} cannot be written to safetensors")
        blob = array.tobytes()
        header[name] = {
            "dtype": DTYPE_NAMES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        offset += len(blob)
        blobs.append(blob)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".safetensors")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(encoded)))
            f.write(encoded)
            for blob in blobs:
                f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read_torch_bin(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(
            f"{path}: only a pytorch_model.bin was found, and reading it needs torch "
            "(pip install torch); or convert it to model.safetensors"
        ) from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"{path}: cannot be read with torch.load(weights_only=True) ({e})") from e
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def read_hf_weights(directory: str) -> tuple[dict[str, np.ndarray], str]:
    """The state dict of a Hugging Face checkpoint directory and the file(s) it came from."""
    single = os.path.join(directory, SAFETENSORS)
    index = os.path.join(directory, SAFETENSORS_INDEX)
    torch_bin = os.path.join(directory, TORCH_BIN)
    if fileio.isfile(single):
        return read_safetensors(single), single
    if fileio.isfile(index):
        try:
            with fileio.open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from e
        tensors = {}
        for shard in shards:
            tensors.update(read_safetensors(os.path.join(directory, shard)))
        return tensors, index
    if fileio.isfile(torch_bin):
        return _read_torch_bin(fileio.local_copy([torch_bin])[0]), torch_bin
    raise CheckpointError(f"{directory}: no weights found (looked for {SAFETENSORS}, {SAFETENSORS_INDEX}, {TORCH_BIN})")
