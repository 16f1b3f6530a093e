"""A workdir and data on a bucket (gs://): the real code paths against an in-memory stand-in for GCS.

etils.epath reads gs:// through fsspec when TensorFlow is absent (here), asking
fsspec for its "gcs" filesystem, which gcsfs provides in a real install. The
`fake_gcs` fixture registers fsspec's in-memory filesystem under that name, so
every epath call of bert_jax.fileio, orbax's step listing and the tokenizer,
corpus and metrics code run unchanged against it, with no network. What it
cannot cover: tensorstore, which orbax writes arrays with, has its own gcs
driver (so no checkpoint is saved or restored here), and the real gcsfs client.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import time

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import bert_jax
from bert_jax import fileio
from bert_jax.data import sources
from bert_jax.data.sample_corpus import sample_documents
from bert_jax.errors import ConfigError

BUCKET = "gs://bucket"
TINY_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "bert_tiny.py")


class FakeGCS(MemoryFileSystem):
    """fsspec's memory filesystem with gcsfs's path conventions: 'gs://b/k' is stored and listed as 'b/k'."""

    protocol = ("gs", "gcs")
    root_marker = ""
    store: dict = {}  # its own, not memory://'s
    pseudo_dirs = [""]

    def __init__(self, *args, finalize_on_close=None, **kwargs):  # epath passes gcsfs's option
        super().__init__(*args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path):
        path = os.fspath(path)
        for prefix in ("gs://", "gcs://"):
            if path.startswith(prefix):
                path = path[len(prefix) :]
        return path.strip("/")


def _clear_caches():
    from etils.epath import backend

    backend.fsspec_backend._get_filesystem.cache_clear()
    fileio._check_backend.cache_clear()


@pytest.fixture
def fake_gcs(monkeypatch, tmp_path):
    from fsspec.registry import _registry

    if fileio._uses_tf_gfile():
        pytest.skip("TensorFlow is installed: epath would read gs:// with tf.io.gfile, not the fsspec stand-in")
    saved = {name: _registry.get(name) for name in ("gcs", "gs")}
    for name in saved:
        fsspec.register_implementation(name, FakeGCS, clobber=True)
    FakeGCS.store.clear()
    FakeGCS.pseudo_dirs[:] = ["", "bucket"]
    _clear_caches()
    monkeypatch.chdir(tmp_path)  # a path mistaken for a local one would appear here as a folder 'gs:'
    yield FakeGCS
    for name, cls in saved.items():
        if cls is None:
            _registry.pop(name, None)
        else:
            _registry[name] = cls
    FakeGCS.store.clear()
    _clear_caches()
    assert not os.path.exists("gs:"), "a gs:// path was written as a local folder"


def put(path: str, data: bytes) -> str:
    with fileio.open(path, "wb") as f:
        f.write(data)
    return path


def read(path: str) -> bytes:
    with fileio.open(path, "rb") as f:
        return f.read()


def test_fileio_on_a_bucket(fake_gcs, tmp_path):
    put(f"{BUCKET}/corpus/b.txt", b"b\n")
    put(f"{BUCKET}/corpus/a.txt", b"one\ntwo\r\nno newline at the end")
    put(f"{BUCKET}/corpus/sub/c.txt", b"c\n")
    assert fileio.isdir(f"{BUCKET}/corpus") and not fileio.isfile(f"{BUCKET}/corpus")
    assert fileio.isfile(f"{BUCKET}/corpus/a.txt") and not fileio.exists(f"{BUCKET}/nothing")
    assert fileio.files_in(f"{BUCKET}/corpus") == [f"{BUCKET}/corpus/a.txt", f"{BUCKET}/corpus/b.txt"]
    assert fileio.glob(f"{BUCKET}/corpus/*.txt") == [f"{BUCKET}/corpus/a.txt", f"{BUCKET}/corpus/b.txt"]
    assert fileio.glob(f"{BUCKET}/*/sub/?.txt") == [f"{BUCKET}/corpus/sub/c.txt"]
    assert fileio.glob(f"{BUCKET}/corpus/a.txt") == [f"{BUCKET}/corpus/a.txt"]
    assert fileio.glob(f"{BUCKET}/corpus/*.md") == [] == fileio.glob(f"{BUCKET}/corpus/none.txt")
    for chunk_size in (3, 1 << 22):  # lines cut across chunks read the same
        lines = list(fileio.iter_byte_lines(f"{BUCKET}/corpus/a.txt", chunk_size))
        assert lines == [b"one\n", b"two\r\n", b"no newline at the end"]
    with fileio.open(f"{BUCKET}/t.json", "w") as f:
        f.write('{"é": 1}')
    with fileio.open(f"{BUCKET}/t.json") as f:
        assert json.load(f) == {"é": 1}
    with pytest.raises(RuntimeError), fileio.open(f"{BUCKET}/partial.txt", "w") as f:
        f.write("half")
        raise RuntimeError
    assert not fileio.exists(f"{BUCKET}/partial.txt"), "a failed write left an object"
    with pytest.raises(ValueError, match="not supported"):
        fileio.open(f"{BUCKET}/t.json", "a")
    (tmp_path / "up" / "d").mkdir(parents=True)
    (tmp_path / "up" / "d" / "x.bin").write_bytes(b"\x00\xff")
    fileio.upload(str(tmp_path / "up"), f"{BUCKET}/up")
    fileio.replace(f"{BUCKET}/up/d", f"{BUCKET}/up/d.moved")  # a folder: Checkpointer's '.corrupt' rename
    assert fileio.listdir(f"{BUCKET}/up") == ["d.moved"]
    fileio.copy(f"{BUCKET}/up/d.moved/x.bin", f"{BUCKET}/up/y.bin")  # the best seed's predictions
    assert read(f"{BUCKET}/up/y.bin") == b"\x00\xff"
    local = fileio.local_copy([f"{BUCKET}/up/d.moved/x.bin", str(tmp_path / "up")])
    with open(local[0], "rb") as f:
        assert f.read() == b"\x00\xff" and local[1] == str(tmp_path / "up")
    with fileio.staged_output(f"{BUCKET}/out/model") as prefix:
        assert not fileio.is_remote(prefix)
        for suffix in (".model", ".vocab"):
            with open(prefix + suffix, "w") as f:
                f.write(suffix)
    assert read(f"{BUCKET}/out/model.vocab") == b".vocab" and fileio.isfile(f"{BUCKET}/out/model.model")
    assert fileio.absolute(f"{BUCKET}/x") == f"{BUCKET}/x" and fileio.absolute("x") == str(tmp_path / "x")


def test_prepare_workdir_and_metrics_writer_on_a_bucket(fake_gcs):
    from tensorboardX.proto.event_pb2 import Event

    from bert_jax.training.metrics import MetricsWriter
    from bert_jax.training.trainer import CONFIG_FILE, prepare_workdir

    workdir = f"{BUCKET}/run"
    config = bert_jax.load_config(TINY_CONFIG)
    prepare_workdir(workdir, config)
    assert fileio.listdir(workdir) == [CONFIG_FILE], "the write probe was not removed"
    assert json.loads(read(f"{workdir}/{CONFIG_FILE}"))["model"]["hidden_size"] == config.model.hidden_size

    writer = MetricsWriter(workdir, total_steps=20)
    writer.write(10, {"loss": 5.0, "mlm_accuracy": 0.1})
    assert fileio.isfile(f"{workdir}/metrics.jsonl"), "metrics are uploaded at each log step, not only at the end"
    writer.write(20, {"loss": 4.0, "eval_loss": 4.5})
    assert writer.plot() == f"{workdir}/curves.png"
    writer.close()
    time.sleep(1.05)  # tensorboardX names event files by the second: a run started in the same one overwrites it
    writer = MetricsWriter(workdir, total_steps=30, start_step=20)  # a resumed run appends to the history
    writer.write(30, {"loss": 3.0})
    writer.close()

    lines = read(f"{workdir}/metrics.jsonl").decode().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20, 30]
    assert read(f"{workdir}/curves.png").startswith(b"\x89PNG")
    events = sorted(fileio.files_in(f"{workdir}/tensorboard"))
    assert len(events) == 2 and all("tfevents" in p for p in events)  # one file per run, as locally
    scalars = {}
    for path in events:
        data, offset = read(path), 0
        while offset < len(data):  # TFRecord framing: length, its crc, the Event, its crc
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 16 + length
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = value.simple_value
    assert scalars[("loss", 10)] == 5.0 and scalars[("eval_loss", 20)] == 4.5 and scalars[("loss", 30)] == 3.0


def test_text_corpus_and_errors_on_a_bucket(fake_gcs, tmp_path):
    put(f"{BUCKET}/corpus/part-1.txt", b"First sentence.\nSecond one.\n\nDoc two.\n\xff\xfe bad\nEnd.\n")
    put(f"{BUCKET}/corpus/part-0.txt", b"Doc zero.\n")
    folder = sources.expand_paths(f"{BUCKET}/corpus")
    assert (
        folder
        == sources.expand_paths(f"{BUCKET}/corpus/part-*.txt")
        == [
            f"{BUCKET}/corpus/part-0.txt",
            f"{BUCKET}/corpus/part-1.txt",
        ]
    )
    documents, stats = sources.read_documents(folder)
    assert documents == [["Doc zero."], ["First sentence.", "Second one."], ["Doc two.", "End."]]
    assert stats.undecodable_lines == 1
    with pytest.raises(ConfigError, match="matches no file"):
        sources.expand_paths(f"{BUCKET}/corpus/*.md")
    with pytest.raises(ConfigError, match="matches no file"):
        sources.expand_paths(f"{BUCKET}/missing")
    put(f"{BUCKET}/blank.txt", b"\n \n")
    with pytest.raises(ConfigError, match="no non-empty lines"):
        sources.read_documents(sources.expand_paths(f"{BUCKET}/blank.txt"))
    # the sample corpus source writes its text into a bucket workdir
    config = bert_jax.load_config(TINY_CONFIG)
    assert sources.load_documents(config, f"{BUCKET}/run") == sources.load_documents(config, str(tmp_path))
    assert fileio.isfile(f"{BUCKET}/run/sample_corpus.txt")


def test_tokenizer_trained_into_and_loaded_from_a_bucket(fake_gcs):
    from bert_jax.data.pipeline import build_pretraining_data, get_tokenizer

    text = "".join("\n".join(doc) + "\n\n" for doc in sample_documents()[:300]).encode()
    put(f"{BUCKET}/corpus/train.txt", text)
    put(f"{BUCKET}/eval/dev.txt", b"A held out sentence.\nAnd another one.\n\nA second document here.\n")
    overrides = {
        "data.source": "text",
        "data.path": f"{BUCKET}/corpus/*.txt",
        "data.eval_path": f"{BUCKET}/eval",
        "tokenizer.vocab_size": 500,
        "model.vocab_size": 500,
        "max_seq_length": 32,
        "masking.max_predictions": 5,
    }
    config = bert_jax.load_config(TINY_CONFIG)
    bert_jax.config.apply_overrides(config, overrides)
    workdir = f"{BUCKET}/run"
    data = build_pretraining_data(config, workdir)
    assert fileio.isfile(f"{workdir}/tokenizer-500.model") and fileio.isfile(f"{workdir}/tokenizer-500.vocab")
    assert len(data.train.input_ids) > 0 and len(data.eval.input_ids) > 0
    model = read(f"{workdir}/tokenizer-500.model")
    again = get_tokenizer(config, workdir)  # the cached one on the bucket, not trained again
    assert read(f"{workdir}/tokenizer-500.model") == model
    assert again.encode("A held out sentence.") == data.tokenizer.encode("A held out sentence.")
    # tokenizer.path on a bucket: the .model, and a folder holding spiece.model
    put(f"{BUCKET}/tok/spiece.model", model)
    for path in (f"{workdir}/tokenizer-500.model", f"{BUCKET}/tok"):
        bert_jax.config.apply_overrides(config, {"tokenizer.path": path})
        assert get_tokenizer(config, workdir).encode("Second one.") == again.encode("Second one.")
    bert_jax.config.apply_overrides(config, {"tokenizer.path": f"{BUCKET}/tok/none.model"})
    with pytest.raises(ConfigError, match="does not exist"):
        get_tokenizer(config, workdir)
    # the command line trainer, both ends on the bucket
    from bert_jax.data import tokenizers

    argv = ["train", f"--input={BUCKET}/corpus/*.txt", "--vocab_size=300", f"--model_prefix={BUCKET}/spm/sp"]
    assert tokenizers.main(argv) == 0
    assert fileio.listdir(f"{BUCKET}/spm") == ["sp.model", "sp.vocab"]


def test_bpe_trained_into_and_loaded_from_a_bucket(fake_gcs):
    from bert_jax.data.bpe import ByteLevelBPETokenizer
    from bert_jax.data.pipeline import get_tokenizer

    config = bert_jax.load_config(TINY_CONFIG.replace("bert_tiny", "roberta_tiny"))
    bert_jax.config.apply_overrides(config, {"tokenizer.vocab_size": 400, "model.vocab_size": 400})
    workdir = f"{BUCKET}/run"  # the sample corpus, written there too
    tokenizer = get_tokenizer(config, workdir)
    assert fileio.listdir(f"{workdir}/bpe-400") == ["merges.txt", "vocab.json"]
    for path in (f"{workdir}/bpe-400/vocab.json", f"{workdir}/bpe-400"):  # vocab.json finds merges.txt beside it
        bert_jax.config.apply_overrides(config, {"tokenizer.path": path})
        loaded = get_tokenizer(config, workdir)
        assert isinstance(loaded, ByteLevelBPETokenizer)
        assert loaded.encode("Hello there.") == tokenizer.encode("Hello there.")


def test_checkpointer_lists_and_sets_aside_steps_on_a_bucket(fake_gcs, monkeypatch, tmp_path):
    import jax.numpy as jnp
    import orbax.checkpoint as ocp
    from orbax.checkpoint._src.path import gcs_utils

    from bert_jax.training.checkpoints import Checkpointer

    # orbax asks google-cloud-storage whether the bucket has a hierarchical namespace: not one here
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    local = Checkpointer(str(tmp_path / "local"), asynchronous=False)
    for step in (1, 2):
        local.save(step, {"w": jnp.full((3,), step, jnp.float32)}, {"iterator": {"epoch": 0, "position": step}})
    local.close()
    fileio.upload(str(tmp_path / "local"), f"{BUCKET}/run")
    remote = Checkpointer(f"{BUCKET}/run", asynchronous=False)
    assert remote.directory == f"{BUCKET}/run/checkpoints" and remote.steps() == [1, 2]

    def unreadable(self, step, args):  # tensorstore's own gcs driver cannot reach the stand-in: fail like a bad file
        raise ValueError(f"step {step} is garbage")

    monkeypatch.setattr(ocp.CheckpointManager, "restore", unreadable)  # also the manager reopened after a failure
    assert remote.restore_latest({"w": None}) is None
    assert fileio.listdir(f"{BUCKET}/run/checkpoints") == ["1.corrupt", "2.corrupt"]
    assert fileio.isdir(f"{BUCKET}/run/checkpoints/2.corrupt/state")
    remote.close()


def test_load_pretrained_and_glue_files_on_a_bucket(fake_gcs, tmp_path):
    import jax
    import numpy as np

    from bert_jax.config_finetune import finetune_config
    from bert_jax.tasks import get_task

    config = bert_jax.load_config(TINY_CONFIG)
    params = bert_jax.init_params(bert_jax.build_model(config), jax.random.PRNGKey(0))
    for fmt in ("hf", "bert_jax"):
        bert_jax.save_pretrained(str(tmp_path / fmt), params, config, format=fmt)
        fileio.upload(str(tmp_path / fmt), f"{BUCKET}/export/{fmt}")
        _, loaded, loaded_config = bert_jax.load_pretrained(f"{BUCKET}/export/{fmt}/")
        assert loaded_config.model.hidden_size == config.model.hidden_size
        local = bert_jax.load_pretrained(str(tmp_path / fmt))[1]
        assert jax.tree.all(jax.tree.map(np.array_equal, loaded, local))
    put(f"{BUCKET}/glue/SST-2/dev.tsv", "sentence\tlabel\nfine film ☺\t1\r\nbad film\t0\n".encode())
    task = get_task(finetune_config("sst2", data={"dir": f"{BUCKET}/glue/SST-2"}))
    examples = task.read("dev")
    assert [(e.text_a, e.label) for e in examples] == [("fine film ☺", 1), ("bad film", 0)]
    assert task.write_predictions([1, 0], examples, f"{BUCKET}/run/predictions") == f"{BUCKET}/run/predictions.tsv"
    assert read(f"{BUCKET}/run/predictions.tsv").decode().splitlines()[0] == "index\tprediction"
    with pytest.raises(ConfigError, match="no such file"):
        get_task(finetune_config("sst2", data={"dir": f"{BUCKET}/glue/none"})).read("dev")


@pytest.mark.skipif(
    importlib.util.find_spec("gcsfs") is not None or importlib.util.find_spec("tensorflow") is not None,
    reason="gs:// has a filesystem package here",
)
def test_missing_gcs_package_is_a_clear_error(tmp_path, monkeypatch):
    from bert_jax.training.trainer import prepare_workdir

    _clear_caches()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r'gs:// paths need .*pip install "bert_jax\[gcs\]"'):
        sources.expand_paths(f"{BUCKET}/corpus")
    with pytest.raises(ConfigError, match=r"bert_jax\[gcs\]"):
        prepare_workdir(f"{BUCKET}/run", bert_jax.load_config(TINY_CONFIG))
    assert not os.path.exists("gs:")
