"""Files that are local or on a cloud bucket (gs://; also s3://, az://, hf://), for workdirs and data.

A local path keeps plain `os` / `open` / `glob` behaviour. A path with one of
`etils.epath`'s schemes goes through epath, which reads and writes gs:// with
`tf.io.gfile` when TensorFlow is installed and with fsspec's gcsfs otherwise
(`pip install "bert_jax[gcs]"`). Buckets have no appends and no atomic
renames of folders: writers here either write an object whole or stage files
locally and upload them (`staged_output`, `upload`).
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import functools
import glob as _glob
import importlib.util
import io
import os
import shutil
import tempfile
from collections.abc import Iterator

from bert_jax.errors import ConfigError

REMOTE_SCHEMES = ("gs://", "s3://", "az://", "hf://")  # what etils.epath dispatches to a cloud backend
# scheme -> (fsspec protocol, what to install for it when TensorFlow's gfile is not there)
_FSSPEC = {
    "gs": ("gcs", 'pip install "bert_jax[gcs]" (gcsfs)'),
    "s3": ("s3", "pip install s3fs"),
    "az": ("az", "pip install adlfs"),
    "hf": ("hf", "pip install huggingface_hub"),
}
_GLOB_MAGIC = ("*", "?", "[")


def is_remote(path: str | os.PathLike) -> bool:
    """True for gs://, s3://, az:// and hf:// paths; everything else is a local path."""
    return os.fspath(path).startswith(REMOTE_SCHEMES)


def _uses_tf_gfile() -> bool:
    """Whether epath reads buckets with tf.io.gfile: TensorFlow is installed and EPATH_USE_TF does not turn it off."""
    off = os.environ.get("EPATH_USE_TF", "").lower() in ("false", "no", "f", "0")
    return not off and importlib.util.find_spec("tensorflow") is not None


@functools.cache
def _check_backend(scheme: str) -> None:
    """A clear error when the package that reads `scheme://` is missing (epath would raise an ImportError later)."""
    if _uses_tf_gfile():
        return
    import fsspec

    protocol, fix = _FSSPEC[scheme]
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        raise ConfigError(f"{scheme}:// paths need a filesystem package that is not installed ({e}); {fix}") from e


def _epath(path: str | os.PathLike):
    from etils import epath

    path = os.fspath(path)
    _check_backend(path.split("://", 1)[0])
    return epath.Path(path)


def absolute(path: str) -> str:
    """`os.path.abspath` for a local path; a bucket path as it is, less a trailing '/'."""
    if not is_remote(path):
        return os.path.abspath(path)
    scheme, rest = path.split("://", 1)
    return f"{scheme}://{rest.rstrip('/')}"


def exists(path: str) -> bool:
    return _epath(path).exists() if is_remote(path) else os.path.exists(path)


def isfile(path: str) -> bool:
    return _epath(path).is_file() if is_remote(path) else os.path.isfile(path)


def isdir(path: str) -> bool:
    return _epath(path).is_dir() if is_remote(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
    """`os.makedirs(path, exist_ok=True)` (on a bucket folders are prefixes: mostly nothing to create)."""
    if is_remote(path):
        _epath(path).mkdir(parents=True, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
    if is_remote(path):
        _epath(path).unlink()
    else:
        os.remove(path)


def rmtree(path: str) -> None:
    if is_remote(path):
        _epath(path).rmtree()
    else:
        shutil.rmtree(path)


def replace(src: str, dst: str) -> None:
    """`os.replace`; on a bucket a copy and delete (a folder object by object, not atomic)."""
    if is_remote(src) or is_remote(dst):
        _epath(src).rename(dst)
    else:
        os.replace(src, dst)


def copy(src: str, dst: str) -> None:
    """`shutil.copy2` of a file; with a bucket on either side a copy of its bytes."""
    if is_remote(src) or is_remote(dst):
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 22)
    else:
        shutil.copy2(src, dst)


def listdir(path: str) -> list[str]:
    """The names in a folder (files and folders), sorted."""
    return sorted(p.name for p in _epath(path).iterdir()) if is_remote(path) else sorted(os.listdir(path))


def files_in(folder: str) -> list[str]:
    """The paths of the files directly in `folder` (not in its subfolders), sorted by name."""
    if not is_remote(folder):
        return sorted(p for p in _glob.glob(os.path.join(folder, "*")) if os.path.isfile(p))
    for _, _, files in _epath(folder).walk():  # one listing, not one request per file (fsspec's root lacks gs://)
        return sorted(os.path.join(folder, name) for name in files)
    return []


def glob(pattern: str) -> list[str]:
    """`glob.glob(pattern)`, sorted; on a bucket `*`, `?` and `[...]` match within one path component."""
    if not is_remote(pattern):
        return sorted(_glob.glob(pattern))
    scheme, rest = pattern.split("://", 1)
    parts = rest.split("/")
    first = next((i for i, part in enumerate(parts) if any(c in part for c in _GLOB_MAGIC)), None)
    if first is None:
        return [pattern] if exists(pattern) else []
    if first == 0:
        raise ConfigError(f"{pattern!r}: the bucket name cannot be a glob")
    base = _epath(f"{scheme}://" + "/".join(parts[:first]))
    return sorted(os.fspath(p) for p in base.glob("/".join(parts[first:])))


def open(path: str, mode: str = "r", encoding: str | None = None, newline: str | None = None):  # noqa: A001
    """`builtins.open` for a local path; for a bucket: 'r', 'rb', 'w', 'wb' (text is UTF-8 unless `encoding`).

    A text file on a bucket is read whole; one written is uploaded whole when
    it is closed, and not at all when the `with` block raises.
    """
    if not is_remote(path):
        return builtins.open(path, mode, encoding=encoding, newline=newline)
    if mode in ("rb", "wb"):
        return _epath(path).open(mode)
    if mode == "r":
        data = _epath(path).read_bytes()
        return io.TextIOWrapper(io.BytesIO(data), encoding=encoding or "utf-8", newline=newline)
    if mode == "w":
        return _UploadOnClose(path, encoding or "utf-8")
    raise ValueError(f"mode {mode!r} is not supported for {path!r}: bucket objects are read or written whole")


class _UploadOnClose(io.StringIO):
    def __init__(self, path: str, encoding: str):
        super().__init__()
        self._path, self._encoding, self._discard = path, encoding, False

    def __exit__(self, exc_type, exc, tb):
        self._discard = exc_type is not None
        return super().__exit__(exc_type, exc, tb)

    def close(self) -> None:
        if not self.closed and not self._discard:
            _epath(self._path).write_bytes(self.getvalue().encode(self._encoding))
        super().close()


def iter_byte_lines(path: str, chunk_size: int = 1 << 22) -> Iterator[bytes]:
    """The lines of a file as bytes, each with its b'\\n', as `for line in open(path, 'rb')` gives them."""
    if not is_remote(path):
        with builtins.open(path, "rb") as f:
            yield from f
        return
    with _epath(path).open("rb") as f:  # read in large chunks: a remote file's own readline is slow
        rest = b""
        while chunk := f.read(chunk_size):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield line + b"\n"
        if rest:
            yield rest


def download(src: str, dst: str) -> str:
    """Copies the file `src` (local or on a bucket) to the local path `dst`; returns `dst`."""
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    if is_remote(src):
        with _epath(src).open("rb") as fin, builtins.open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 22)
    else:
        shutil.copyfile(src, dst)
    return dst


def upload(src: str, dst: str) -> None:
    """Copies the local file or folder `src` to `dst` (local or on a bucket), overwriting; folders recursively,
    files in sorted order."""
    if os.path.isdir(src):
        makedirs(dst)
        for name in sorted(os.listdir(src)):
            upload(os.path.join(src, name), os.path.join(dst, name))
    elif is_remote(dst):
        with builtins.open(src, "rb") as fin, _epath(dst).open("wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 22)
    else:
        shutil.copyfile(src, dst)


@functools.lru_cache(maxsize=1)
def staging_dir() -> str:
    """A local folder of this process for copies of bucket files, removed when the process exits."""
    folder = tempfile.mkdtemp(prefix="bert_jax_staging-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def local_copy(paths: list[str]) -> list[str]:
    """Local paths of `paths` (files): local ones as they are, bucket ones downloaded together into one new
    folder of the staging dir under their own names (so files meant to sit beside each other still do)."""
    if not any(is_remote(p) for p in paths):
        return list(paths)
    folder = tempfile.mkdtemp(dir=staging_dir())
    return [download(p, os.path.join(folder, os.path.basename(p))) if is_remote(p) else p for p in paths]


@contextlib.contextmanager
def staged_output(path: str) -> Iterator[str]:
    """A local path to write `path` to (a file, a folder, or a prefix like sentencepiece's `<prefix>.model`):
    `path` itself when local; for a bucket a path in a new local folder whose entries are uploaded beside
    `path` in sorted order when the block ends without error."""
    if not is_remote(path):
        yield path
        return
    folder = tempfile.mkdtemp(dir=staging_dir())
    try:
        yield os.path.join(folder, os.path.basename(path))
        for name in sorted(os.listdir(folder)):
            upload(os.path.join(folder, name), os.path.join(os.path.dirname(path), name))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
