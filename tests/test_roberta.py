"""RoBERTa: fairseq position ids, byte-level BPE, Hugging Face parity and the config family.

Parity follows tests/test_hf_parity.py: random-weight `transformers` models,
fp32, max abs diff <= 1e-4 on a padded batch (RoBERTa's padding id 1 and one
token type), then bert_jax's export read back by `transformers`' Auto classes.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import bert_jax
from bert_jax.convert.hf_config import hf_config_from_model
from bert_jax.data.bpe import ByteLevelBPETokenizer, train_byte_level_bpe
from bert_jax.data.pipeline import build_pretraining_data, get_tokenizer
from bert_jax.data.tokenizers import load_tokenizer
from bert_jax.errors import CheckpointError, ConfigError
from bert_jax.models.bert import default_position_ids
from tests.hf_reference import padded_pair_batch, random_hf_model, torch_outputs
from tests.test_hf_parity import TOL, compare, jax_outputs, max_diff

ROUND_TRIP_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces, tabs\tand\nnew lines   ",
    "Größe, naïve café — „Anführungszeichen“ and emoji 🙂",
    "中文分词需要整词掩码，这是一个测试。",
    "Привет, как дела? Всё хорошо.",
    "",
]


def roberta_batch(hf_model) -> dict[str, np.ndarray]:
    cfg = hf_model.config
    return padded_pair_batch(cfg.vocab_size, pad_token_id=cfg.pad_token_id, type_vocab_size=cfg.type_vocab_size)


def test_position_ids_count_real_tokens_after_the_padding_id():
    cfg = bert_jax.load_config("configs/roberta_tiny.py").model
    ids = np.array([[0, 5, 9, 2, 1, 1], [0, 7, 2, 1, 1, 1]])
    ours = np.asarray(default_position_ids(jnp.asarray(ids), cfg))
    theirs = transformers.models.roberta.modeling_roberta.RobertaEmbeddings.create_position_ids_from_input_ids(
        torch.tensor(ids), padding_idx=1
    )
    np.testing.assert_array_equal(ours, theirs.numpy())
    np.testing.assert_array_equal(ours[0], [2, 3, 4, 5, 1, 1])
    bert = bert_jax.load_config("configs/bert_tiny.py").model
    np.testing.assert_array_equal(np.asarray(default_position_ids(jnp.asarray(ids), bert))[1], np.arange(6))


@pytest.mark.parametrize("arch", ["RobertaModel", "RobertaForMaskedLM"])
def test_random_weights_parity_and_round_trip(arch, tmp_path):
    hf_model = random_hf_model(arch)
    hf_model.save_pretrained(tmp_path / "hf")
    batch = roberta_batch(hf_model)
    ref = torch_outputs(hf_model, batch)

    model, params, config = bert_jax.load_pretrained(tmp_path / "hf")
    assert config.model.family == "roberta" and config.model.position_ids_from_padding
    assert config.model.use_pooler == (arch == "RobertaModel")  # RobertaForMaskedLM has no pooler
    out = jax_outputs(model, params, batch)
    assert (out.mlm_logits is not None) == (arch == "RobertaForMaskedLM")
    assert out.seq_relationship_logits is None
    diffs = compare(arch, ref, out)
    assert max(diffs.values()) <= TOL, diffs

    bert_jax.save_pretrained(tmp_path / "out", params, config)
    auto = transformers.AutoModelForMaskedLM if arch.endswith("ForMaskedLM") else transformers.AutoModel
    reloaded = auto.from_pretrained(tmp_path / "out").eval()
    assert type(reloaded).__name__ == arch
    diffs_again = compare(arch, torch_outputs(reloaded, batch), out)
    assert max(diffs_again.values()) <= TOL, diffs_again


def test_offset_positions_matter(tmp_path):
    """Without the offset knob the same weights give other numbers: the parity above depends on it."""
    hf_model = random_hf_model("RobertaModel")
    hf_model.save_pretrained(tmp_path)
    batch = roberta_batch(hf_model)
    model, params, _ = bert_jax.load_pretrained(tmp_path, overrides={"model.position_ids_from_padding": False})
    assert max_diff(jax_outputs(model, params, batch).last_hidden_state, torch_outputs(hf_model, batch)[0]) > 0.1


def test_export_refuses_layouts_hugging_face_cannot_hold():
    roberta = bert_jax.load_config("configs/roberta_tiny.py", ["model.pair_head=True"]).model
    with pytest.raises(CheckpointError, match="pair_head=False"):
        hf_config_from_model(roberta)
    bert = bert_jax.load_config("configs/bert_tiny.py", ["model.position_ids_from_padding=True"]).model
    with pytest.raises(CheckpointError, match="position_ids_from_padding=False"):
        hf_config_from_model(bert)


@pytest.fixture(scope="module")
def sample_bpe(tmp_path_factory) -> ByteLevelBPETokenizer:
    """A 600-token byte-level BPE trained on the bundled sample corpus (English only)."""
    from bert_jax.data.sources import write_sample_corpus

    folder = tmp_path_factory.mktemp("bpe")
    corpus = write_sample_corpus(str(folder / "sample.txt"))
    return load_tokenizer(train_byte_level_bpe([corpus], 600, str(folder / "bpe")))


def test_trained_bpe_has_robertas_layout(sample_bpe):
    tok = sample_bpe
    assert (tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.mask_id == tok.vocab_size - 1 == 599
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, tok.mask_id]) == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    ids = tok.encode("a <mask> here")  # literal special tokens map to their ids
    assert tok.mask_id in ids


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_bpe_round_trips_any_text_without_unknowns(sample_bpe, text):
    """Byte-level: Chinese, Cyrillic and emoji the training text never had still encode and decode exactly."""
    ids = sample_bpe.encode(text)
    assert sample_bpe.unk_id not in ids
    assert sample_bpe.decode(ids) == text


def test_bpe_word_starts(sample_bpe):
    ids = sample_bpe.encode("the cat, sat")
    tokens = sample_bpe.convert_ids_to_tokens(ids)
    starts = sample_bpe.word_starts(ids)
    assert starts[0]  # the first word has no 'Ġ' (no prefix space, as in RoBERTa) but starts a word
    assert [t for t, s in zip(tokens, starts) if s][1:] == [t for t in tokens[1:] if t[0] in "Ġ,"]
    assert not any(sample_bpe.word_starts(sample_bpe.encode("中文"))[1:])  # byte pieces of one word


def _wikitext_lines(data_dir: str, name: str, limit: int) -> list[str]:
    with open(os.path.join(data_dir, "wikitext-2", name), encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[:limit]


def test_bpe_ids_equal_roberta_tokenizer_fast_on_wikitext(data_dir, tmp_path):
    vocab = train_byte_level_bpe([os.path.join(data_dir, "wikitext-2", "valid.txt")], 2000, str(tmp_path))
    ours = load_tokenizer(str(tmp_path))
    # positional: transformers 5 takes (vocab, merges); a `vocab_file=` keyword is silently ignored
    theirs = transformers.RobertaTokenizerFast(vocab, os.path.join(tmp_path, "merges.txt"))
    assert theirs.vocab_size == ours.vocab_size == 2000
    specials = [theirs.cls_token_id, theirs.pad_token_id, theirs.sep_token_id, theirs.unk_token_id]
    assert specials + [theirs.mask_token_id] == [ours.cls_id, ours.pad_id, ours.sep_id, ours.unk_id, ours.mask_id]
    lines = _wikitext_lines(data_dir, "test.txt", 400) + ROUND_TRIP_TEXTS
    expected = theirs(lines, add_special_tokens=False)["input_ids"]
    mismatches = [line for line, want in zip(lines, expected) if ours.encode(line) != want]
    assert not mismatches, mismatches[:3]
    assert sum(map(len, expected)) > 20_000  # real text, not a handful of tokens


def test_pipeline_trains_bpe_and_packs_full_sentences(tmp_path):
    overrides = ["tokenizer.vocab_size=400", "model.vocab_size=400", "max_seq_length=64"]
    config = bert_jax.load_config("configs/roberta_tiny.py", overrides)
    data = build_pretraining_data(config, str(tmp_path))
    assert os.path.isfile(tmp_path / "bpe-400" / "vocab.json") and os.path.isfile(tmp_path / "bpe-400" / "merges.txt")
    assert isinstance(data.tokenizer, ByteLevelBPETokenizer) and data.tokenizer.vocab_size == 400
    rows = data.train
    assert (rows.input_ids[:, 0] == 0).all()  # <s>
    lengths = rows.attention_mask.sum(1)
    assert (rows.input_ids[np.arange(len(lengths)), lengths - 1] == 2).all()  # </s> closes each row
    assert (rows.input_ids[rows.attention_mask == 0] == 1).all()  # <pad>
    assert not rows.token_type_ids.any() and not rows.pair_labels.any()
    # FULL-SENTENCES fills rows across document ends; DOC-SENTENCES (the knob passed through) leaves them short
    doc_config = bert_jax.load_config("configs/roberta_tiny.py", [*overrides, "data.pack_mode=doc_sentences"])
    doc_rows = build_pretraining_data(doc_config, str(tmp_path)).train
    assert len(rows) < len(doc_rows) and lengths.mean() > doc_rows.attention_mask.sum(1).mean()
    # a second run reuses the cached files, and a tokenizer that pads with another id is refused
    mtime = os.path.getmtime(tmp_path / "bpe-400" / "vocab.json")
    assert get_tokenizer(config, str(tmp_path)).vocab_size == 400
    assert os.path.getmtime(tmp_path / "bpe-400" / "vocab.json") == mtime
    config.model.pad_token_id = 0
    with pytest.raises(ConfigError, match="pad_token_id=1"):
        get_tokenizer(config, str(tmp_path))


def test_bpe_errors_name_the_problem_and_the_fix(sample_bpe, tmp_path):
    (tmp_path / "vocab.json").write_text('{"a": 0, "b": 1}')
    with pytest.raises(ConfigError, match="BPE merges .*merges.txt' does not exist"):
        load_tokenizer(str(tmp_path))  # a folder with a vocab.json is a BPE folder
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ConfigError, match=r"lacks the special tokens \['<s>'"):
        load_tokenizer(str(tmp_path / "vocab.json"))
    (tmp_path / "vocab.json").write_text("not json")
    with pytest.raises(ConfigError, match="cannot be read as BPE files"):
        load_tokenizer(str(tmp_path / "vocab.json"))
    with pytest.raises(ConfigError, match="at least 261"):
        train_byte_level_bpe([sample_bpe.vocab_path], 100, str(tmp_path / "small"))
    config = bert_jax.load_config("configs/roberta_tiny.py", ["tokenizer.kind=wordpiece"])
    with pytest.raises(ConfigError, match="unknown tokenizer.kind 'wordpiece'"):
        get_tokenizer(config, str(tmp_path))


def test_sequence_length_leaves_room_for_the_position_offset():
    from types import SimpleNamespace

    from bert_jax.training.trainer import validate_run

    mesh = SimpleNamespace(shape={"data": 1, "fsdp": 1})
    validate_run(bert_jax.load_config("configs/roberta_base.py", ["batch_size=8"]), mesh)  # 512 tokens, 514 positions
    too_long = bert_jax.load_config("configs/roberta_base.py", ["batch_size=8", "max_seq_length=513"])
    with pytest.raises(ConfigError, match="less RoBERTa's position offset 2"):
        validate_run(too_long, mesh)
