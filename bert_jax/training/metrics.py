"""What a run leaves for people: metrics.jsonl, TensorBoard events, curves.png, and a console log line.

Only process 0 writes; every writer flushes at each log step so a killed run
keeps its history up to the last logged step. A workdir on a bucket (gs://)
has no appends: the files are written in a local folder and uploaded whole
at each log step, plot and close.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time

from bert_jax import fileio

log = logging.getLogger(__name__)
CONSOLE_METRICS = (
    "loss",
    "mlm_accuracy",
    "nsp_accuracy",
    "sop_accuracy",
    "rtd_accuracy",
    "eval_loss",
    "eval_mlm_accuracy",
    "eval_rtd_accuracy",
    "accuracy",  # fine-tuning: the train batch's, then the dev set's official metrics
    "eval_accuracy",
    "eval_f1",
    "eval_mcc",
    "eval_pearson",
    "eval_spearman",
    "eval_exact_match",
)


class MetricsWriter:
    def __init__(self, workdir: str, total_steps: int, enabled: bool = True, start_step: int = 0):
        self.workdir, self.total_steps, self.enabled = workdir, total_steps, enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._staged = enabled and fileio.is_remote(workdir)
        self._folder = tempfile.mkdtemp(dir=fileio.staging_dir()) if self._staged else workdir  # files written here
        self._jsonl = os.path.join(self._folder, "metrics.jsonl")
        if self._staged and fileio.isfile(self.path):  # a resumed run continues the history
            fileio.download(self.path, self._jsonl)
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(self._folder, "tensorboard"))
        self._last_time, self._last_step = time.time(), start_step

    def write(self, step: int, metrics: dict) -> None:
        """Appends one JSON line and TensorBoard scalars for `step`."""
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        with open(self._jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step":
                self._tb.add_scalar(key, value, step)
        self._tb.flush()
        self._upload("metrics.jsonl", "tensorboard")

    def steps_per_sec(self, step: int) -> float:
        """Steps per second since the previous call (or the start of this run)."""
        now = time.time()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        return rate

    def progress(self, step: int, metrics: dict, rate: float) -> str:
        """A console line with loss, accuracies, steps/s and ETA (logged by process 0 only)."""
        eta = (self.total_steps - step) / rate if rate > 0 else float("nan")
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k in CONSOLE_METRICS)
        line = f"step {step}/{self.total_steps} {shown} {rate:.2f} steps/s ETA {_duration(eta)}"
        if self.enabled:
            log.info(line)
        return line

    def plot(self) -> str | None:
        """Redraws curves.png (loss and accuracies against step) from metrics.jsonl."""
        if not self.enabled or not os.path.isfile(self._jsonl):
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with open(self._jsonl, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
        for key in sorted({k for r in records for k in r}):
            points = [(r["step"], r[key]) for r in records if key in r]
            target = ax_loss if key.endswith("loss") else ax_acc if key.endswith("accuracy") else None
            if target is not None and points:
                target.plot(*zip(*points), marker="." if key.startswith("eval") else None, label=key)
        for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            ax.set_xlabel("step")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
        fig.tight_layout()
        path = os.path.join(self._folder, "curves.png")
        fig.savefig(path + ".tmp.png", dpi=100)
        plt.close(fig)
        os.replace(path + ".tmp.png", path)
        self._upload("curves.png")
        return os.path.join(self.workdir, "curves.png")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._staged and os.path.isdir(self._folder):
            self._upload("tensorboard")
            shutil.rmtree(self._folder, ignore_errors=True)

    def _upload(self, *names: str) -> None:
        """Copies the staged files `names` to a bucket workdir (nothing to do for a local one)."""
        for name in names if self._staged else ():
            fileio.upload(os.path.join(self._folder, name), os.path.join(self.workdir, name))


def _duration(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
