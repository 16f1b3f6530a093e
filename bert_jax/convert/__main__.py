"""Converts a checkpoint directory between Hugging Face and bert_jax layouts.

    python -m bert_jax.convert --src=DIR --dst=DIR [--to=hf|bert_jax]

Without `--to` the direction is inferred: a Hugging Face directory becomes a
bert_jax export, anything bert_jax can load becomes a Hugging Face directory.
"""

from __future__ import annotations

import os
import shutil
import sys

from absl import app, flags, logging

from bert_jax.errors import BertJaxError
from bert_jax.models import count_params
from bert_jax.pretrained import is_hf_checkpoint, load_pretrained, save_pretrained

FLAGS = flags.FLAGS
flags.DEFINE_string("src", None, "checkpoint directory to read", required=True)
flags.DEFINE_string("dst", None, "directory to write (replaced atomically)", required=True)
flags.DEFINE_enum("to", None, ["hf", "bert_jax"], "target layout; inferred from --src when omitted")

# Files that travel with the weights so the converted folder still tokenizes like the source.
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model")


def copy_tokenizer_files(src: str, dst: str) -> list[str]:
    """Copies the tokenizer files found in `src` to `dst`; returns their names."""
    copied = [name for name in TOKENIZER_FILES if os.path.isfile(os.path.join(src, name))]
    for name in copied:
        shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
    return copied


def main(argv) -> None:
    del argv
    target = FLAGS.to or ("bert_jax" if is_hf_checkpoint(FLAGS.src) else "hf")
    try:
        model, params, config = load_pretrained(FLAGS.src)
        save_pretrained(FLAGS.dst, params, config, format=target)
        copy_tokenizer_files(FLAGS.src, FLAGS.dst)
    except BertJaxError as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(
        f"converted {FLAGS.src} -> {FLAGS.dst} ({target} layout, {config.model.family}, "
        f"{count_params(model, include_heads=True):,} parameters)"
    )


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
