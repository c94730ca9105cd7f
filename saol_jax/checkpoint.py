"""Orbax checkpoints of the train state: periodic async saves, auto-resume.

This is the only module that imports orbax, so a move to another checkpoint
API touches one file. Saves are committed atomically by orbax (a folder is
renamed into place when complete): a process killed mid-save leaves a
temporary folder that is never restored. Every process calls every method;
orbax coordinates the hosts and writes to local paths and gs:// alike.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator
from typing import Any, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx, traverse_util

from saol_jax import paths

log = logging.getLogger(__name__)

T = TypeVar("T")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, no permission); the message says what to do."""


@contextlib.contextmanager
def _explained_write_errors(directory: str) -> Iterator[None]:
    """Turns a full disk or a refused write, however orbax wraps it, into CheckpointWriteError."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - orbax re-raises its threads' errors in several types
        cause = _os_error_in(error)
        if cause is None:
            raise
        if cause.errno == errno.ENOSPC:
            hint = "free some space there, or re-run with a --workdir on a disk with room"
        else:
            hint = "check the workdir's permissions, or re-run with another --workdir"
        raise CheckpointWriteError(
            cause.errno, f"could not write a checkpoint in {directory}: {cause.strerror or cause}; {hint}. "
            "Earlier complete checkpoints are kept; re-running the same command resumes from the newest"
        ) from error


def _os_error_in(error: BaseException) -> OSError | None:
    """The first OSError with an errno of a write failure in `error`'s cause/context chain."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT):
            return error
        if "No space left on device" in str(error):
            return OSError(errno.ENOSPC, "No space left on device")
        error = error.__cause__ or error.__context__
    return None


class Checkpointer:
    """Saves and restores one pytree (the TrainState) under `directory` (relative, absolute or a URL)."""

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        directory = paths.resolve(directory)  # orbax needs absolute paths
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
        with _explained_write_errors(self.directory):
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
        with _explained_write_errors(self.directory):
            self._manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        finally:
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
