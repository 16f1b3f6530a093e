"""ELECTRA: Hugging Face parity of both models, the joint export, the generator sizes, and the objective's pieces."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import transformers

import bert_jax
from bert_jax.models import count_params, init_params
from bert_jax.models.bert import BertModel
from bert_jax.models.electra import generator_model_config
from bert_jax.objectives.electra import corrupt
from bert_jax.objectives.losses import build_loss_fn
from tests.hf_reference import SMALL, padded_pair_batch, random_hf_model, torch_outputs

TOL = 1e-4


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


def jax_apply(model, params, batch, method=None):
    return model.apply({"params": params}, **{k: jnp.asarray(v) for k, v in batch.items()}, method=method)


def compare(arch: str, ref, out) -> dict[str, float]:
    diffs = {"last_hidden_state": max_diff(out.last_hidden_state, ref.hidden_states[-1])}
    if arch == "ElectraForPreTraining":
        diffs["rtd_logits"] = max_diff(out.rtd_logits, ref.logits)
    if arch == "ElectraForMaskedLM":
        diffs["mlm_logits"] = max_diff(out.mlm_logits, ref.logits)
    return diffs


@pytest.mark.parametrize("arch", ["ElectraForPreTraining", "ElectraForMaskedLM", "ElectraModel"])
def test_random_weights_parity_and_round_trip(arch, tmp_path):
    hf_model = random_hf_model(arch)
    hf_model.save_pretrained(tmp_path / "hf")
    batch = padded_pair_batch(hf_model.config.vocab_size)
    ref = torch_outputs(hf_model, batch)

    model, params, config = bert_jax.load_pretrained(tmp_path / "hf")
    assert config.model.family == "electra" and not config.model.use_pooler
    assert "projection" in params["embeddings"]  # embedding_size 16 != hidden 32: electra.embeddings_project
    out = jax_apply(model, params, batch)
    assert (out.rtd_logits is not None) == (arch == "ElectraForPreTraining")
    assert (out.mlm_logits is not None) == (arch == "ElectraForMaskedLM")
    assert out.pooled_output is None and out.seq_relationship_logits is None
    diffs = compare(arch, ref, out)
    print(arch, {k: f"{v:.1e}" for k, v in diffs.items()})
    assert max(diffs.values()) <= TOL, diffs

    bert_jax.save_pretrained(tmp_path / "out", params, config)
    reloaded = getattr(transformers, arch).from_pretrained(tmp_path / "out").eval()
    diffs_again = compare(arch, torch_outputs(reloaded, batch), out)
    assert max(diffs_again.values()) <= TOL, diffs_again


def small_electra_config(**overrides):
    """An ELECTRA joint config of hf_reference's SMALL sizes, weights drawn wide enough to show errors."""
    sizes = dict(
        vocab_size=SMALL["vocab_size"],
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        intermediate_size=96,
        embedding_size=16,
        max_position_embeddings=SMALL["max_position_embeddings"],
        initializer_range=0.3,
    )
    config = bert_jax.load_config("configs/electra_tiny.py", {f"model.{k}": v for k, v in sizes.items()})
    config.electra.generator_hidden_fraction = 0.5
    config.update(overrides)
    return config


def test_joint_export_is_two_transformers_models_with_the_same_outputs(tmp_path):
    config = small_electra_config()
    model = bert_jax.build_model(config)
    params = init_params(model, jax.random.PRNGKey(1))
    bert_jax.save_pretrained(tmp_path, params, config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["discriminator", "generator"]
    batch = padded_pair_batch(config.model.vocab_size)

    ours_disc = jax_apply(model, params, batch, method="discriminate")
    ours_gen = jax_apply(model, params, batch, method="generate")
    disc = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "discriminator").eval()
    gen = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "generator").eval()
    assert (gen.config.hidden_size, gen.config.num_attention_heads, gen.config.intermediate_size) == (32, 1, 128)
    assert gen.config.embedding_size == disc.config.embedding_size == 16
    assert max_diff(torch_outputs(disc, batch).logits, ours_disc.rtd_logits) <= TOL
    assert max_diff(torch_outputs(gen, batch).logits, ours_gen.mlm_logits) <= TOL
    # the shared tables are written into both, and the generator's decoder is tied to them
    shared = disc.electra.embeddings.word_embeddings.weight
    assert torch.equal(shared, gen.electra.embeddings.word_embeddings.weight)
    assert torch.equal(gen.generator_lm_head.weight, gen.electra.embeddings.word_embeddings.weight)
    # and bert_jax reads each folder back as that model
    _, _, gen_config = bert_jax.load_pretrained(tmp_path / "generator")
    assert gen_config.model.mlm_head and not gen_config.model.rtd_head


# Official generator configs (config.json of google/electra-{small,base,large}-generator).
OFFICIAL_GENERATORS = {
    "electra_small": dict(embedding_size=128, hidden_size=256, num_hidden_layers=12, intermediate_size=1024),
    "electra_base": dict(embedding_size=768, hidden_size=256, num_hidden_layers=12, intermediate_size=1024),
    "electra_large": dict(embedding_size=1024, hidden_size=256, num_hidden_layers=24, intermediate_size=1024),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_GENERATORS))
def test_generator_sizes_are_the_released_generators(name):
    config = bert_jax.load_config(f"configs/{name}.py")
    official = transformers.ElectraConfig(vocab_size=30522, num_attention_heads=4, **OFFICIAL_GENERATORS[name])
    with torch.device("meta"):
        theirs = sum(p.numel() for p in transformers.ElectraModel(official).parameters())
    gen = generator_model_config(config)
    assert (gen.hidden_size, gen.num_heads, gen.intermediate_size) == (256, 4, 1024)
    assert count_params(BertModel(ml_collections.FrozenConfigDict(gen))) == theirs


def test_corrupt_writes_samples_only_into_used_slots_and_labels_real_changes():
    input_ids = jnp.array([[1, 9, 4, 9, 5, 0], [1, 6, 9, 2, 0, 0]])  # 9 = [MASK]
    positions = jnp.array([[1, 3, 2], [2, 0, 0]])  # row 1: one used slot, two unused (position 0)
    originals = jnp.array([[7, 8, 4], [3, 0, 0]])
    weights = jnp.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # the generator puts all its mass on: 7 (the original), 6 (a change), 4 (the original, left unmasked)
    chosen = jnp.array([[7, 6, 4], [8, 8, 8]])
    logits = jnp.where(jax.nn.one_hot(chosen, 12) > 0, 0.0, -1e9)
    corrupted, replaced = corrupt(input_ids, positions, originals, weights, logits, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(corrupted, [[1, 7, 4, 6, 5, 0], [1, 6, 8, 2, 0, 0]])
    np.testing.assert_array_equal(replaced, [[0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0]])


def test_electra_config_follows_the_electra_code():
    small = bert_jax.load_config("configs/electra_small.py")
    assert small.objective == "electra" and small.pair_objective == "none"
    assert tuple(small.masking.replace_probs) == (0.85, 0.0, 0.15)  # pretrain_helpers.mask: no random ids
    assert small.masking.max_predictions == 19  # int((0.15 + 0.005) * 128)
    large = bert_jax.load_config("configs/electra_large.py")
    assert large.masking.rate == 0.25 and large.masking.max_predictions == 130
    assert small.electra.rtd_weight == 50.0


def masked_toy_batch(vocab_size: int) -> dict[str, jax.Array]:
    """hf_reference's padded batch with 3 / 2 / 1 masked slots (the ids left in place: only the losses matter)."""
    pair = padded_pair_batch(vocab_size)
    batch = {k: jnp.asarray(v, jnp.int32) for k, v in pair.items()}
    batch.update(
        masked_positions=jnp.array([[1, 2, 3], [1, 2, 0], [1, 0, 0]], jnp.int32),
        masked_ids=jnp.asarray(pair["input_ids"][:, 1:4], jnp.int32),
        masked_weights=jnp.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]], jnp.float32),
    )
    return batch


def tree_norm(tree) -> float:
    return float(jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))))


def test_one_loss_trains_both_models_and_no_gradient_flows_through_sampling():
    config = small_electra_config()
    model = bert_jax.build_model(config)
    params = init_params(model, jax.random.PRNGKey(0))
    batch, rng = masked_toy_batch(config.model.vocab_size), jax.random.PRNGKey(3)
    loss_fn = build_loss_fn(config, model)

    def grad_of(term):
        return jax.grad(lambda p: loss_fn(p, batch, rng)[1][term])

    mlm, rtd = jax.jit(lambda p: (grad_of("mlm_loss")(p), grad_of("rtd_loss")(p)))(params)
    # the RTD loss reaches the generator only through the sampled ids, so not at all; MLM never the discriminator
    assert tree_norm(rtd["generator"]) == 0 and tree_norm(mlm["discriminator"]) == 0
    assert tree_norm(rtd["discriminator"]) > 0 and tree_norm(mlm["generator"]) > 0
    # the shared embeddings learn from both
    assert tree_norm(rtd["embeddings"]) > 0 and tree_norm(mlm["embeddings"]) > 0


def test_eval_metrics_have_precision_recall_and_a_baseline():
    config = small_electra_config()
    model = bert_jax.build_model(config)
    params = init_params(model, jax.random.PRNGKey(0))
    batch = masked_toy_batch(config.model.vocab_size)
    loss_fn = build_loss_fn(config, model)
    evaluate = jax.jit(lambda p, b: loss_fn(p, b, None)[1])
    metrics = evaluate(params, batch)
    assert {"rtd_precision", "rtd_recall", "mlm_accuracy", "rtd_accuracy"} <= set(metrics)
    # with 6 masked slots over 22 real tokens, at most 6/22 of the tokens can be replaced
    assert 0 < float(metrics["rtd_replaced_fraction"]) <= 6 / 22 + 1e-6
    expected = float(metrics["mlm_loss"] + 50 * metrics["rtd_loss"])
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-6)
    again = evaluate(params, batch)  # evaluation samples with a fixed key: the same numbers
    assert float(again["rtd_accuracy"]) == float(metrics["rtd_accuracy"])
    train = jax.eval_shape(lambda p, b, r: loss_fn(p, b, r)[1], params, batch, jax.random.PRNGKey(0))
    assert "rtd_precision" not in train  # ratios do not add over micro-batches
