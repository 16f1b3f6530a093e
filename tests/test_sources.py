"""Text sources: BERT-format and paragraph files, non-UTF-8 lines, a locally prepared tfds dataset, host shards."""

from __future__ import annotations

import pytest

import bert_jax
from bert_jax.data import sources
from bert_jax.errors import ConfigError


def test_bert_format_documents_and_undecodable_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(
        b"First sentence of doc one.\nSecond sentence.\n\n"
        b"Doc two, with a broken line next.\n\xff\xfe not utf-8 \xc3\x28\nAfter it.\n\n\n"
    )
    documents, stats = sources.read_documents([str(path)])
    assert documents == [
        ["First sentence of doc one.", "Second sentence."],
        ["Doc two, with a broken line next.", "After it."],
    ]
    assert stats.undecodable_lines == 1 and stats.lines == 8


def test_paragraph_format_makes_articles_of_sentences(tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text(
        " = Cats = \n\n The cat sat . It was happy ! Then it left.\n = = Diet = = \n Another paragraph here .\n"
        " = Dogs = \n Dogs bark .\n"
    )
    documents, _ = sources.read_documents([str(path)], "paragraphs")
    assert documents == [
        ["The cat sat .", "It was happy !", "Then it left.", "Another paragraph here ."],
        ["Dogs bark ."],
    ]


def test_paths_glob_folder_and_errors(tmp_path):
    for name in ("b.txt", "a.txt"):
        (tmp_path / name).write_text("x y z.\n")
    assert [p.rsplit("/", 1)[-1] for p in sources.expand_paths(str(tmp_path))] == ["a.txt", "b.txt"]
    assert len(sources.expand_paths(str(tmp_path / "*.txt"))) == 2
    with pytest.raises(ConfigError, match="matches no file"):
        sources.expand_paths(str(tmp_path / "*.md"))
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(ConfigError, match="no non-empty lines"):
        sources.read_documents([str(tmp_path / "blank.txt")])
    with pytest.raises(ConfigError, match="unknown data.line_format"):
        sources.read_documents([str(tmp_path / "a.txt")], "tweets")


def test_host_shards_partition_the_documents():
    docs = list(range(10))
    shards = [sources.host_shard(docs, i, 3) for i in range(3)]
    assert sorted(d for s in shards for d in s) == docs and all(shards)


def test_sample_corpus_is_real_prose(tmp_path):
    config = bert_jax.load_config("configs/bert_tiny.py")
    documents = sources.load_documents(config, str(tmp_path))
    words = sum(len(s.split()) for d in documents for s in d)
    assert len(documents) > 500 and words > 50_000
    assert (tmp_path / "sample_corpus.txt").is_file()


def test_tfds_dataset_prepared_locally(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")

    class TinyText(tfds.core.GeneratorBasedBuilder):
        """Twelve short documents, built here; nothing is downloaded."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()})
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(12):
                yield i, {"text": f"Document {i} starts here. It has a second sentence.\nAnd a second paragraph."}

    TinyText(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    config = bert_jax.load_config(
        "configs/bert_tiny.py",
        {"data.source": "tfds", "data.tfds_name": "tiny_text", "data.tfds_data_dir": str(tmp_path)},
    )
    documents = sources.load_documents(config, str(tmp_path))
    assert len(documents) == 12
    assert sorted(documents)[0] == ["Document 0 starts here.", "It has a second sentence.", "And a second paragraph."]
    config.data.tfds_name = "no_such_dataset"
    with pytest.raises(ConfigError, match="no_such_dataset.*cannot be opened"):
        sources.load_documents(config, str(tmp_path))
