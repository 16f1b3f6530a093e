"""GLUE readers on the real SST-2 / CoLA / MRPC files, featurization, and the bad-input errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bert_jax.config_finetune import finetune_config
from bert_jax.data.tokenizers import Tokenizer
from bert_jax.errors import DataError
from bert_jax.tasks import get_task
from bert_jax.tasks.glue import encode_pair


def _task(name: str, folder: str):
    return get_task(finetune_config(name, data={"dir": folder}))


def _data_lines(path: str, header: bool) -> list[list[str]]:
    with open(path, encoding="utf-8-sig") as f:
        lines = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return lines[1:] if header else lines


@pytest.mark.parametrize(
    "name,folder,header,text_col,label_col",
    [("sst2", "SST-2", True, 0, 1), ("cola", "CoLA", False, 3, 1), ("mrpc", "MRPC", True, 3, 0)],
)
def test_reads_real_dev_files(data_dir, name, folder, header, text_col, label_col):
    path = os.path.join(data_dir, "glue", folder, "dev.tsv")
    rows = _data_lines(path, header)
    examples = _task(name, os.path.join(data_dir, "glue", folder)).read("dev")
    assert len(examples) == len(rows)
    for example, row in zip(examples[:50], rows[:50]):
        assert example.text_a == row[text_col] and example.label == int(row[label_col])
    if name == "mrpc":  # a pair task: the second sentence, quotes kept verbatim (GLUE files are not CSV-quoted)
        assert examples[0].text_b == rows[0][4] and examples[0].text_b.startswith('"')
    assert {e.label for e in examples} == {0, 1}


def test_featurize_pairs_and_truncation(data_dir):
    task = _task("mrpc", os.path.join(data_dir, "glue", "MRPC"))
    examples = task.read("dev")[:4]

    class Chars:  # one id per character: lengths are easy to predict; BERT's pair layout
        pad_id, cls_id, sep_id = 0, 1, 2
        build_inputs, num_special_tokens = Tokenizer.build_inputs, Tokenizer.num_special_tokens
        pair_separators, second_token_type = Tokenizer.pair_separators, Tokenizer.second_token_type

        def encode(self, text):
            return [3 + (ord(c) % 50) for c in text]

    features = task.featurize(examples, Chars(), 32)
    first = examples[0]
    ids, types = encode_pair(Chars(), first.text_a, first.text_b, 32)
    assert len(ids) == 32 and ids[0] == 1 and ids.count(2) == 2  # [CLS] a [SEP] b [SEP], cut to 32
    assert sum(types) == len(ids) - ids.index(2) - 1  # segment 1 is b and its [SEP]
    assert features.arrays["input_ids"].shape == (4, 32) and list(features.lengths) == [32] * 4
    assert list(features.arrays["labels"]) == [e.label for e in examples]


def test_missing_column_names_file_and_fix(tmp_path):
    (tmp_path / "dev.tsv").write_text("sentence\tscore\nfine film\t1\n")
    with pytest.raises(DataError, match=r"dev.tsv:1: header .* lacks column\(s\) \['label'\]"):
        _task("sst2", str(tmp_path)).read("dev")


def test_short_row_names_line(tmp_path):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nfine film\t1\nno tab here 0\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: 1 tab-separated column\(s\).*fix the line"):
        _task("sst2", str(tmp_path)).read("dev")


def test_unknown_label_names_line_and_labels(tmp_path):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nfine film\t1\nbad film\tnegative\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: unknown label 'negative'; sst2 labels are \['0', '1'\]"):
        _task("sst2", str(tmp_path)).read("dev")


def test_tfds_glue_reads_the_same_examples_as_the_tsv_files(data_dir, tmp_path):
    """`data.source=tfds` on a `glue/sst2` prepared here, offline, in tfds' layout, from the real SST-2 rows.

    tfds' own GLUE builder downloads its zips and needs TensorFlow to run, so
    this builder (same name, config, version and features as tfds' `glue/sst2`:
    `sentence`, `label` as ClassLabel negative/positive, `idx`) writes the
    dataset, and the task reads it back with `tfds.data_source` as it reads a
    real prepared `glue/sst2`.
    """
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("array_record")
    source = os.path.join(data_dir, "glue", "SST-2")
    rows = {
        split: _data_lines(os.path.join(source, f"{split}.tsv"), header=True)[:count]
        for split, count in (("train", 300), ("dev", 100))
    }

    class Glue(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="sst2")]
        VERSION = tfds.core.Version("2.0.0")

        def _info(self):
            features = {
                "sentence": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=["negative", "positive"]),
                "idx": tfds.features.Scalar(np.int32),
            }
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples("train"), "validation": self._generate_examples("dev")}

        def _generate_examples(self, split):
            for i, (sentence, label) in enumerate(rows[split]):
                yield i, {"sentence": sentence, "label": int(label), "idx": i}

    Glue(config="sst2", data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    from_tsv = get_task(finetune_config("sst2", data={"dir": source}))
    from_tfds = get_task(finetune_config("sst2", data={"source": "tfds", "tfds_data_dir": str(tmp_path)}))
    for split, count in (("train", 300), ("dev", 100)):
        expected = [(e.text_a, e.label) for e in from_tsv.read(split)[:count]]
        got = [(e.text_a, e.label) for e in from_tfds.read(split)]
        assert sorted(got) == sorted(expected)  # tfds may store the rows in another order
