"""Orbax checkpoints of the train state: periodic async saves, auto-resume.

This is the only module that imports orbax, so a move to another checkpoint
API touches one file. Saves are committed atomically by orbax (a folder is
renamed into place when complete): a process killed mid-save leaves a
temporary folder that is never restored. Every process calls every method;
orbax coordinates the hosts and writes to local paths and gs:// alike.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx, traverse_util

log = logging.getLogger(__name__)

T = TypeVar("T")


class Checkpointer:
    """Saves and restores one pytree (the TrainState) under `directory`."""

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        # The handler is named up front so that `item_metadata` can read a checkpoint
        # before anything was saved or restored through this manager (`restore_raw`).
        self._manager = ocp.CheckpointManager(
            directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )
        self.directory = directory

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        """Starts an asynchronous save of `state` at `step` (a no-op if one exists)."""
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore_latest(self, target: T) -> tuple[int, T] | None:
        """Restores the newest checkpoint that loads into `target`'s structure.

        `target` gives shapes, dtypes and shardings (arrays or
        `jax.ShapeDtypeStruct`s). A checkpoint that fails to load (truncated,
        corrupt, from another model) is skipped with a warning and the one
        before it is tried. Returns None when nothing could be restored.
        """
        abstract = jax.tree.map(_abstract, target)
        for step in reversed(self.steps()):
            try:
                state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as error:  # noqa: BLE001 - any failure means "unusable checkpoint"
                log.warning("skipping checkpoint %d in %s: %s", step, self.directory, error)
                continue
            return step, state
        return None

    def restore_raw(self, step: int) -> dict:
        """The checkpoint at `step` as nested dicts of numpy arrays, without a target structure.

        Works whatever the topology that saved it (another number of devices or
        hosts): every array is read whole into this host's memory.
        """
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local),
            self._manager.item_metadata(step),
        )
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return jax.tree.map(np.asarray, restored)

    def wait(self) -> None:
        """Blocks until the pending asynchronous save is committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _abstract(x: Any) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))


def load_weights(directory: str, params: nnx.State, batch_stats: nnx.State) -> tuple[nnx.State, nnx.State]:
    """Parameters and BN statistics of the newest checkpoint in `directory`.

    For `init_from`: the optimiser state and step are not read, so the
    checkpoint may come from a run with another optimiser or schedule. The
    given states supply structure, shapes and shardings; a mismatch (another
    backbone, another class count) raises a ValueError naming the variable.
    """
    checkpointer = Checkpointer(directory, async_save=False)
    try:
        steps = checkpointer.steps()
        if not steps:
            raise FileNotFoundError(f"init_from: no complete checkpoint in {directory}")
        raw = checkpointer.restore_raw(steps[-1])
    finally:
        checkpointer.close()
    return _fill(params, raw["params"]), _fill(batch_stats, raw["batch_stats"])


def _fill(target: nnx.State, raw: dict) -> nnx.State:
    """Copies a raw restored tree ({'value': array} leaves) into `target`'s layout."""
    flat_raw = {path[:-1]: value for path, value in traverse_util.flatten_dict(raw).items()}
    leaves = []
    for path, variable in nnx.to_flat_state(target):
        key = tuple(str(k) for k in path)
        if key not in flat_raw:
            raise ValueError(f"init_from: the checkpoint has no variable {'/'.join(key)}")
        value = flat_raw[key]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"init_from: {'/'.join(key)} has shape {tuple(value.shape)} in the checkpoint, "
                f"{tuple(variable.shape)} in the model"
            )
        leaves.append((path, jax.device_put(value, variable.sharding)))
    return nnx.from_flat_state(leaves)
