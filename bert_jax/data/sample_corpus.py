"""The offline sample corpus: English prose from the standard library's own documentation.

The texts are the language reference topics behind `help()` (`pydoc_data`)
and the docstrings of well-documented modules.

Every Python install has these texts, so the main command trains on a fresh
machine with no download and no third-party text in the repository. The
corpus is written once per workdir in BERT's text format (one sentence per
line, a blank line between documents) and read back like any other file.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re

from bert_jax import fileio

# Modules with long, well-written docstrings; missing ones are skipped.
MODULES = (
    "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "concurrent.futures", "configparser",
    "contextlib", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum", "fractions",
    "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html.parser",
    "http.client", "http.server", "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "logging",
    "logging.handlers", "mailbox", "math", "mimetypes", "multiprocessing.pool", "numbers", "operator", "optparse",
    "os", "pathlib", "pdb", "pickle", "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shelve",
    "shlex", "shutil", "smtplib", "socket", "socketserver", "sqlite3", "statistics", "string", "subprocess",
    "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace", "traceback", "turtle", "typing",
    "unittest", "unittest.mock", "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref",
    "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zoneinfo",
)  # fmt: skip
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
PROSE = re.compile(r"[A-Za-z]")


def _docstrings(module) -> list[str]:
    seen, docs = set(), []

    def add(obj):
        doc = inspect.getdoc(obj)
        if doc and id(obj) not in seen:
            seen.add(id(obj))
            docs.append(doc)

    add(module)
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        add(obj)
        if inspect.isclass(obj):
            for attr_name, attr in sorted(vars(obj).items()):
                if not attr_name.startswith("_") and callable(attr):
                    add(attr)
    return docs


def _prose_sentences(doc: str) -> list[str]:
    """Sentences of the prose paragraphs of a docstring; code examples and tables are dropped."""
    sentences = []
    for paragraph in doc.split("\n\n"):
        lines = paragraph.splitlines()
        if any(line.startswith((" ", ">>>", "...", "-", "*", "|", "=", "+")) for line in lines):
            continue
        text = " ".join(line.strip() for line in lines)
        sentences += [s for s in SENTENCE_END.split(text) if len(s.split()) >= 3 and PROSE.search(s)]
    return sentences


def _help_topics() -> list[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return []
    return [topics[key] for key in sorted(topics)]


def sample_documents() -> list[list[str]]:
    """Documents (lists of sentences), one per text with at least two prose sentences."""
    documents = [s for s in map(_prose_sentences, _help_topics()) if len(s) >= 2]
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module absent from this build is simply skipped
            continue
        for doc in _docstrings(module):
            sentences = _prose_sentences(doc)
            if len(sentences) >= 2:
                documents.append(sentences)
    return documents


def write_sample_corpus(path: str) -> str:
    """Writes the corpus to `path` (once; atomically) and returns the path."""
    if fileio.isfile(path):
        return path
    if fileio.is_remote(path):  # a bucket object appears whole when written
        with fileio.open(path, "w") as f:
            f.writelines("\n".join(sentences) + "\n\n" for sentences in sample_documents())
        return path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"  # several hosts (processes) may write it at once into a shared workdir
    with open(tmp, "w", encoding="utf-8") as f:
        for sentences in sample_documents():
            f.write("\n".join(sentences) + "\n\n")
    os.replace(tmp, path)
    return path
