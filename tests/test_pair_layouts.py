"""Sentence pairs in each family's layout, checked against transformers' tokenizers and models on real data.

BERT-style checkpoints read `[CLS] a [SEP] b [SEP]` with token types 0/1;
RoBERTa reads `<s> a </s></s> b </s>`, has one token type, and numbers
positions from pad_token_id + 1. Fine-tuning a RoBERTa checkpoint on pairs
(MRPC, SQuAD, multiple choice) must lay its rows out that way, packed
batches included (tokenizer `build_inputs`, `finetune_packing.pack_batch`'s
`first_position`).
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import transformers

from bert_jax import load_pretrained
from bert_jax.config_finetune import finetune_config
from bert_jax.data.bpe import MERGES_FILE, VOCAB_FILE, train_byte_level_bpe
from bert_jax.data.tokenizers import load_tokenizer
from bert_jax.errors import ConfigError
from bert_jax.models.bert import first_position
from bert_jax.tasks import get_task
from bert_jax.tasks.glue import encode_pair
from bert_jax.training.finetune_init import check_token_types
from bert_jax.training.finetune_packing import pack_batch

MAX_LENGTH = 48  # short enough that many MRPC pairs (~50 tokens) are truncated
PAIRS = 300


@pytest.fixture(scope="module")
def mrpc(data_dir):
    config = finetune_config("mrpc", data={"dir": os.path.join(data_dir, "glue", "MRPC")})
    return get_task(config), get_task(config).read("dev")[:PAIRS]


@pytest.fixture(scope="module")
def bpe_dir(data_dir, tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("bpe"))
    train_byte_level_bpe([os.path.join(data_dir, "wikitext-2", "valid.txt")], 2000, folder)
    return folder


def _reference_rows(reference, examples) -> tuple[list, list | None]:
    encoded = reference(
        [e.text_a for e in examples], [e.text_b for e in examples], truncation="longest_first", max_length=MAX_LENGTH
    )
    return encoded["input_ids"], encoded.get("token_type_ids")


def test_wordpiece_pairs_equal_bert_tokenizer(mrpc, data_dir):
    task, examples = mrpc
    vocab = os.path.join(data_dir, "tokenizers", "bert-base-uncased-vocab.txt")
    ours = load_tokenizer(vocab, do_lower_case=True)
    ids, types = _reference_rows(transformers.BertTokenizer(vocab, do_lower_case=True), examples)
    rows = [encode_pair(ours, e.text_a, e.text_b, MAX_LENGTH) for e in examples]
    assert [r[0] for r in rows] == ids
    assert [r[1] for r in rows] == types
    assert sum(len(r) == MAX_LENGTH for r in ids) > PAIRS // 4  # truncation really happened on many pairs


def test_bpe_pairs_equal_roberta_tokenizer(mrpc, bpe_dir):
    task, examples = mrpc
    ours = load_tokenizer(bpe_dir)
    reference = transformers.RobertaTokenizerFast(os.path.join(bpe_dir, VOCAB_FILE), os.path.join(bpe_dir, MERGES_FILE))
    ids, _ = _reference_rows(reference, examples)
    rows = [encode_pair(ours, e.text_a, e.text_b, MAX_LENGTH) for e in examples]
    assert [r[0] for r in rows] == ids
    assert all(set(r[1]) == {0} for r in rows)  # RoBERTa has one token type
    assert sum(len(r) == MAX_LENGTH for r in ids) > PAIRS // 4
    single = ours.build_inputs(ours.encode("one text"))
    assert single.ids == reference("one text")["input_ids"] and single.second_start == len(single.ids)
    features = task.featurize(examples, ours, MAX_LENGTH)
    assert features.arrays["token_type_ids"].max() == 0


def _tiny_roberta(vocab_size: int, folder: str) -> transformers.RobertaModel:
    torch.manual_seed(0)
    config = transformers.RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=MAX_LENGTH + 2,  # RoBERTa's positions start after the padding id (1)
        type_vocab_size=1,
        pad_token_id=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = transformers.RobertaModel(config).eval()
    model.save_pretrained(folder)
    return model


def test_packed_roberta_pairs_equal_roberta_model(mrpc, bpe_dir, tmp_path):
    """MRPC pairs featurized and packed as fine-tuning does give RobertaModel's hidden states and pooled output."""
    task, examples = mrpc
    examples = examples[:24]
    hf = _tiny_roberta(2000, str(tmp_path))
    for name in (VOCAB_FILE, MERGES_FILE):  # the checkpoint folder carries its tokenizer, as on the Hub
        os.symlink(os.path.join(bpe_dir, name), tmp_path / name)
    model, params, config = load_pretrained(str(tmp_path))
    tokenizer = load_tokenizer(str(tmp_path))
    features = task.featurize(examples, tokenizer, MAX_LENGTH)
    check_token_types(features, config.model, tokenizer, "mrpc")
    assert first_position(config.model) == 2
    rows = np.arange(len(examples))
    width = 2 * MAX_LENGTH  # positions restart per example: a row may be longer than the position table
    packed = pack_batch(features, rows, len(rows), width, len(rows), True, first_position(config.model))
    assert int((packed["row_weights"] > 0).sum()) == len(rows)
    out = model.apply(
        {"params": params},
        *(jnp.asarray(packed[k]) for k in ("input_ids", "attention_mask", "token_type_ids")),
        position_ids=jnp.asarray(packed["position_ids"]),
        pool_index=jnp.asarray(packed["pool_index"]),
        mask_kind="packed",
    )
    reference = transformers.RobertaTokenizerFast(os.path.join(bpe_dir, VOCAB_FILE), os.path.join(bpe_dir, MERGES_FILE))
    inputs = reference(
        [e.text_a for e in examples],
        [e.text_b for e in examples],
        truncation="longest_first",
        max_length=MAX_LENGTH,
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        expected = hf(**inputs)
    hidden = np.asarray(out.last_hidden_state).reshape(-1, 32)
    for i, start in enumerate(packed["pool_index"]):
        n = int(features.lengths[i])
        np.testing.assert_allclose(hidden[start : start + n], expected.last_hidden_state[i, :n].numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(out.pooled_output), expected.pooler_output.numpy(), atol=1e-4)
    assert len(set(packed["pool_index"] // width)) < len(rows)  # rows really hold several examples


def test_squad_windows_use_the_tokenizers_layout(data_dir, bpe_dir):
    data = {"dir": os.path.join(data_dir, "squad-v1.1"), "train_file": "dev-v1.1-articles-00-39.json"}
    config = finetune_config("squad_v1", data=data, finetune={"squad_split_articles": 37})
    task = get_task(config)
    examples = task.read("dev")[:60]
    tokenizer = load_tokenizer(bpe_dir)
    features = task.featurize(examples, tokenizer, 128)
    for row in range(len(features)):
        ex = examples[features.example_index[row]]
        ids = features.arrays["input_ids"][row]
        query = tokenizer.encode(ex.question)[: config.finetune.max_query_length]
        assert list(ids[: len(query) + 3]) == [tokenizer.cls_id, *query, tokenizer.sep_id, tokenizer.sep_id]
        start, end = features.arrays["start_positions"][row], features.arrays["end_positions"][row]
        if start > 0:  # a labelled window: its tokens are the answer's
            answer = tokenizer.decode(ids[start : end + 1]).strip()
            assert answer == ex.answers[0]["text"].strip(), (answer, ex.answers[0]["text"])
        offsets = features.extras["offsets"][row]
        assert (offsets[: len(query) + 3] == -1).all() and offsets[len(query) + 3, 0] >= 0  # context starts there
    assert features.arrays["token_type_ids"].max() == 0
    assert (features.arrays["start_positions"] > 0).sum() > 30


def test_pairs_of_another_family_are_refused_for_a_one_type_model(mrpc, data_dir):
    task, examples = mrpc
    wordpiece = load_tokenizer(os.path.join(data_dir, "tokenizers", "bert-base-uncased-vocab.txt"))
    features = task.featurize(examples[:8], wordpiece, MAX_LENGTH)
    roberta = ml_collections.ConfigDict({"type_vocab_size": 1})
    with pytest.raises(ConfigError, match=r"2 token types but the model has type_vocab_size=1.*tokenizer.path"):
        check_token_types(features, roberta, wordpiece, "mrpc")
    check_token_types(features, ml_collections.ConfigDict({"type_vocab_size": 2}), wordpiece, "mrpc")


def test_mrpc_fine_tunes_from_a_roberta_checkpoint(mrpc, bpe_dir, tmp_path):
    """The fine-tuning run from a RoBERTa folder (weights + vocab.json/merges.txt): its packed batches number
    positions from 2 with one token type, and it trains and scores MRPC."""
    from bert_jax.training.finetune import FineTuner

    checkpoint = tmp_path / "roberta"
    _tiny_roberta(2000, str(checkpoint))
    for name in (VOCAB_FILE, MERGES_FILE):
        os.symlink(os.path.join(bpe_dir, name), checkpoint / name)
    task, _ = mrpc
    finetune = {"max_train_examples": 48, "max_eval_examples": 32, "num_epochs": 1}
    config = finetune_config(
        "mrpc", data=dict(task.config.data), finetune=finetune, batch_size=16, max_seq_length=MAX_LENGTH
    )
    config.init_from, config.log_every = str(checkpoint), 1
    tuner = FineTuner(config, str(tmp_path / "run"))
    batch = tuner.order.batch(0)
    first = batch["position_ids"].reshape(-1)[batch["pool_index"][batch["row_weights"] > 0]]
    assert set(first) == {2} and batch["token_type_ids"].max() == 0  # each example's <s> at RoBERTa's position 2
    results = tuner.train()
    assert {"f1", "accuracy"} <= set(results) and all(np.isfinite(v) for v in results.values())
