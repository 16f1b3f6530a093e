"""The Colab notebooks of launch/colab run top to bottom on CPU with tiny sizes, as CI runs them.

Each notebook is executed with nbclient in a fresh kernel of this interpreter
(the `python3` kernel: jupyter_client starts it with `sys.executable`), after
a cell injected right below the notebook's `parameters` cell that shrinks the
run, as papermill's `-p` would. Any failing cell fails the test. The
fine-tuning notebook starts from the pretraining notebook's workdir (its
default when that holds checkpoints): a BERT-Tiny checkpoint compiles and
trains faster on CPU than all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install nbformat (test extra)")
nbclient = pytest.importorskip("nbclient", reason="pip install nbclient ipykernel (test extra)")
pytest.importorskip("ipykernel", reason="pip install ipykernel (test extra)")

COLAB = Path(__file__).resolve().parent.parent / "launch" / "colab"
CELL_TIMEOUT = 300  # seconds per cell; the tiny runs take seconds
PRETRAIN_TINY = {
    "TOTAL_STEPS": 10,
    "BATCH_SIZE": 8,
    "MAX_SEQ_LENGTH": 32,
    "WARMUP_STEPS": 2,
    "LOG_EVERY": 5,
    "EVAL_EVERY": 10,
    "CHECKPOINT_EVERY": 10,
    "EVAL_BATCHES": 1,
    "EXTRA_OVERRIDES": {"masking.max_predictions": 5},
}
# One training batch and one dev batch: every step of another batch shape is another XLA compilation, the bulk
# of a tiny run's time on CPU.
FINETUNE_TINY = {
    "NUM_EPOCHS": 1.0,
    "MAX_TRAIN_EXAMPLES": 16,
    "MAX_EVAL_EXAMPLES": 16,
    "BATCH_SIZE": 16,
    "MAX_SEQ_LENGTH": 32,
    "LOG_EVERY": 1,
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the kernel's, once it has exited
    return usage.ru_utime + usage.ru_stime


def run_notebook(name: str, parameters: dict, cwd: Path) -> nbformat.NotebookNode:
    """Executes launch/colab/`name` with `parameters` injected; returns the executed notebook."""
    nb = nbformat.read(COLAB / name, as_version=4)
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    defaults = nb.cells[tagged[0]].source
    unknown = [key for key in parameters if f"\n{key} =" not in f"\n{defaults}"]
    assert not unknown, f"{name}'s parameters cell has no {unknown}"
    source = "# injected by tests/test_colab_notebooks.py\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
    nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)"))  # the environment
    env = dict(os.environ, JAX_PLATFORMS="cpu")  # CI has no TPU; never wait for one
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    cpu, start = _children_cpu(), time.perf_counter()
    client.execute(env=env)  # raises CellExecutionError, naming the cell, when one fails
    print(f"{name}: wall {time.perf_counter() - start:.1f}s, kernel CPU {_children_cpu() - cpu:.1f}s")
    kernel_prefix = nb.cells[0].outputs[0]["text"].strip()  # a venv's python is a symlink: compare the prefixes
    assert os.path.realpath(kernel_prefix) == os.path.realpath(sys.prefix), (
        f"the kernel ran in {kernel_prefix}, not this environment {sys.prefix}: a 'python3' kernelspec elsewhere "
        "shadows this environment's"
    )
    return nb


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.parametrize("name", ["pretrain_bert_tiny.ipynb", "finetune_glue_sst2.ipynb"])
def test_notebook_is_committed_clean(name):
    """Valid nbformat v4, no outputs kept, one `parameters` cell (for papermill), Colab's TPU runtime asked for."""
    nb = nbformat.read(COLAB / name, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), f"clear {name}'s outputs"
    assert sum("parameters" in cell.metadata.get("tags", []) for cell in code) == 1
    assert nb.metadata.get("accelerator") == "TPU" and nb.metadata.kernelspec.name == "python3"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, nbformat.NotebookNode]:
    """pretrain_bert_tiny.ipynb's tiny run: (its workdir, the executed notebook)."""
    workdir = tmp_path_factory.mktemp("colab") / "pretrain"
    nb = run_notebook("pretrain_bert_tiny.ipynb", {"WORKDIR": str(workdir), **PRETRAIN_TINY}, COLAB)
    return workdir, nb


def test_pretrain_notebook(pretrained):
    workdir, nb = pretrained
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 5, 10] and "eval_mlm_accuracy" in rows[-1]
    assert (workdir / "curves.png").stat().st_size > 0 and (workdir / "checkpoints" / "10").is_dir()
    assert any("image/png" in o.get("data", {}) for cell in nb.cells for o in cell.get("outputs", []))
    assert "trained to step 10" in _outputs_text(nb)


def test_finetune_notebook(pretrained, data_dir, tmp_path):
    sst2 = (Path(data_dir) / "glue" / "SST-2").resolve()
    if not (sst2 / "train.tsv").is_file():
        pytest.skip(f"no GLUE SST-2 in {sst2} (train.tsv, dev.tsv)")
    workdir, _ = pretrained
    parameters = {"PRETRAIN_WORKDIR": str(workdir), "DATA_DIR": str(sst2), "WORKDIR": str(tmp_path / "sst2")}
    nb = run_notebook("finetune_glue_sst2.ipynb", {**parameters, **FINETUNE_TINY}, COLAB)
    results = json.loads((tmp_path / "sst2" / "eval_results.json").read_text())
    assert 0.0 <= results["accuracy"] <= 100.0
    assert (tmp_path / "sst2" / "metrics.jsonl").read_text().strip() and (tmp_path / "sst2" / "curves.png").is_file()
    assert "fine-tuning the model of pretrain_bert_tiny.ipynb" in _outputs_text(nb)
