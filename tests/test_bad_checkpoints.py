"""Bad checkpoints fail with errors that name the file and the tensor, and nothing is half-loaded or lost."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import bert_jax
from bert_jax.convert import weights_io
from bert_jax.errors import CheckpointError
from tests.hf_reference import random_hf_model


@pytest.fixture()
def hf_dir(tmp_path):
    random_hf_model("BertForPreTraining").save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def rewrite_tensors(directory, edit) -> None:
    path = os.path.join(directory, "model.safetensors")
    tensors = weights_io.read_safetensors(path)
    edit(tensors)
    weights_io.write_safetensors(path, tensors)


def test_directory_without_weights(hf_dir):
    os.remove(hf_dir / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"no weights found .*model\.safetensors"):
        bert_jax.load_pretrained(hf_dir)


def test_not_a_checkpoint_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        bert_jax.load_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        bert_jax.load_pretrained(tmp_path / "missing")


@pytest.mark.parametrize(
    "model_type, architecture", [("gpt2", "GPT2LMHeadModel"), ("bert", "BertForQuestionAnsweringWithExtras")]
)
def test_unsupported_architecture(hf_dir, model_type, architecture):
    config = json.loads((hf_dir / "config.json").read_text())
    config.update(model_type=model_type, architectures=[architecture])
    (hf_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=rf"config\.json.*{architecture}.*supported architectures: AlbertForMaskedLM"
    ):
        bert_jax.load_pretrained(hf_dir)


def test_wrong_shape_names_file_and_tensor(hf_dir):
    rewrite_tensors(hf_dir, lambda t: t.update({"bert.pooler.dense.weight": np.zeros((32, 31), np.float32)}))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*pooler\.dense\.weight.*\(31, 32\).*\(32, 32\)"):
        bert_jax.load_pretrained(hf_dir)


def test_missing_tensor_names_file_and_tensor(hf_dir):
    rewrite_tensors(hf_dir, lambda t: t.pop("bert.encoder.layer.2.intermediate.dense.bias"))
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: missing tensor\(s\) encoder\.layer\.2\.intermediate"
    ):
        bert_jax.load_pretrained(hf_dir)


def test_truncated_weights_file(hf_dir):
    path = hf_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        bert_jax.load_pretrained(hf_dir)


def test_torch_bin_without_torch_is_a_clear_error(hf_dir, monkeypatch):
    os.remove(hf_dir / "model.safetensors")
    (hf_dir / "pytorch_model.bin").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*needs torch"):
        bert_jax.load_pretrained(hf_dir)


def test_pickled_code_is_refused(hf_dir):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > pwned.txt",))

    os.remove(hf_dir / "model.safetensors")
    with open(hf_dir / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError, match=r"weights_only=True"):
        bert_jax.load_pretrained(hf_dir)
    assert not os.path.exists("pwned.txt")


def test_failed_save_keeps_the_previous_checkpoint(hf_dir, tmp_path, monkeypatch):
    _, params, config = bert_jax.load_pretrained(hf_dir)
    target = tmp_path / "export"
    bert_jax.save_pretrained(target, params, config)
    before = (target / "model.safetensors").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("bert_jax.pretrained.write_safetensors", disk_full)
    with pytest.raises(OSError, match="No space left"):
        bert_jax.save_pretrained(target, params, config)
    assert (target / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "export"], "no temporary folder is left behind"


def test_native_export_round_trip_and_shape_check(hf_dir, tmp_path):
    _, params, config = bert_jax.load_pretrained(hf_dir)
    bert_jax.save_pretrained(tmp_path / "native", params, config, format="bert_jax")
    _, again, config_again = bert_jax.load_pretrained(tmp_path / "native")
    assert config_again.model.to_dict() == config.model.to_dict()
    np.testing.assert_array_equal(again["pooler"]["dense"]["kernel"], params["pooler"]["dense"]["kernel"])
    rewrite_path = tmp_path / "native" / "params.safetensors"
    tensors = weights_io.read_safetensors(str(rewrite_path))
    tensors["pooler/dense/kernel"] = tensors["pooler/dense/kernel"][:, :3]
    weights_io.write_safetensors(str(rewrite_path), tensors)
    with pytest.raises(CheckpointError, match=r"params\.safetensors.*pooler/dense/kernel"):
        bert_jax.load_pretrained(tmp_path / "native")


def test_convert_cli_both_ways_and_error_exit(hf_dir, tmp_path):
    run = lambda *args: subprocess.run(
        [sys.executable, "-m", "bert_jax.convert", *args], capture_output=True, text=True, timeout=300
    )
    to_native = run(f"--src={hf_dir}", f"--dst={tmp_path / 'native'}")
    assert to_native.returncode == 0, to_native.stderr
    assert "bert_jax layout" in to_native.stdout
    to_hf = run(f"--src={tmp_path / 'native'}", f"--dst={tmp_path / 'hf'}")
    assert to_hf.returncode == 0 and "hf layout" in to_hf.stdout
    original = weights_io.read_safetensors(str(hf_dir / "model.safetensors"))
    back = weights_io.read_safetensors(str(tmp_path / "hf" / "model.safetensors"))
    assert set(back) == set(original)
    for name in original:
        np.testing.assert_array_equal(original[name], back[name], err_msg=name)
    failed = run(f"--src={tmp_path / 'nowhere'}", f"--dst={tmp_path / 'x'}")
    assert failed.returncode == 2 and "no such checkpoint directory" in failed.stderr
