"""orbax checkpoints of the train state plus the data position, with exact resume.

orbax writes each step to a temporary folder and renames it when complete,
and removes old steps (beyond `keep`) only after a newer one is finalized.
A latest step that cannot be read is renamed `<step>.corrupt` (kept for
inspection, never deleted) and the previous one is used instead.
"""

from __future__ import annotations

import logging
import os

import orbax.checkpoint as ocp

from bert_jax import fileio
from bert_jax.errors import ConfigError

log = logging.getLogger(__name__)


class Checkpointer:
    """Saves and restores (train state, JSON data state) pairs under `workdir/checkpoints`."""

    def __init__(self, workdir: str, keep: int = 3, asynchronous: bool = True):
        self.directory = fileio.absolute(os.path.join(workdir, "checkpoints"))  # gs://... as it is
        self._keep, self._async = keep, asynchronous
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, enable_async_checkpointing=self._async)
        try:
            return ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))
        except ImportError as e:  # orbax asks google-cloud-storage about a gs:// bucket's layout
            if not fileio.is_remote(self.directory):
                raise
            raise ConfigError(
                f"checkpoints in {self.directory!r} need a package that is not installed ({e}); "
                'pip install "bert_jax[gcs]"'
            ) from e

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, data_state: dict) -> None:
        self._manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state))
        )

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def restore_latest(self, abstract_state):
        """(step, state, data_state) of the newest readable checkpoint, or None when there is none."""
        for step in reversed(self.steps()):
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
                    ),
                )
                return step, restored.state, restored.data
            except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many types for bad files
                corrupt = os.path.join(self.directory, f"{step}.corrupt")
                log.error("checkpoint %s cannot be read (%s); moved to %s, using the previous one", step, e, corrupt)
                fileio.replace(os.path.join(self.directory, str(step)), corrupt)
                self._manager.close()
                self._manager = self._open()
        return None

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
