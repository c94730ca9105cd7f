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
import json
import logging
import time
from collections.abc import Collection, Iterator
from typing import Any, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx, traverse_util
from jax.experimental import multihost_utils

from saol_jax.core import paths

log = logging.getLogger(__name__)

# Damaged checkpoints set aside (`<step>.damaged`) that are kept for inspection; older ones are removed.
DAMAGED_KEPT = 2

T = TypeVar("T")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, no permission); the message says what to do."""


class CheckpointRestoreError(RuntimeError):
    """A complete checkpoint could not be read, and not because its bytes are damaged.

    A transient storage failure or a checkpoint of another structure: the
    run stops without touching the workdir, rather than restarting silently.
    """


# Errors that mean "this checkpoint's bytes are damaged" (tensorstore status codes and
# decoder messages). Anything else, e.g. EIO, UNAVAILABLE or DEADLINE_EXCEEDED from a
# flaky disk or object store, is not read as corruption: skipping a good checkpoint
# because a read failed once would silently throw its training away.
_CORRUPTION_MARKERS = ("DATA_LOSS", "OUT_OF_RANGE", "Error decoding", "Unexpected end", "checksum", "truncated")


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

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True,
                 clean_temporary: bool = False):
        """`clean_temporary`: delete the folders of saves killed before orbax committed them. Only
        the trainer sets it: a tool reading a live run's checkpoints must not delete its pending save."""
        directory = paths.resolve(directory)  # orbax needs absolute paths
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=clean_temporary,
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
        """Restores the newest complete, undamaged checkpoint into `target`'s structure.

        `target` gives shapes, dtypes and shardings (arrays or
        `jax.ShapeDtypeStruct`s). Checkpoints orbax did not commit are never
        listed. A committed one whose bytes are damaged (a truncated or
        corrupt file) is skipped with a warning and the one before it is
        tried; any other failure (an I/O error, another structure) raises
        CheckpointRestoreError. With several processes, process 0's list of
        steps decides, and a step is used only if every process restored it,
        so all of them resume from the same step. Returns None when there is
        no usable checkpoint.
        """
        abstract = jax.tree.map(_abstract, target)
        below = None
        while True:
            candidates = [s for s in self.steps() if below is None or s < below]
            step = _agreed(candidates[-1] if candidates else -1)
            if step < 0:
                return None
            try:
                state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
                damaged = None
            except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many types
                if not _is_corruption(error):
                    raise CheckpointRestoreError(
                        f"could not read checkpoint {step} in {self.directory}: {_first_line(error)}. "
                        "Nothing was changed: if the storage failed, re-run when it is back; if this "
                        f"checkpoint is damaged, move {paths.join(self.directory, str(step))} aside and "
                        "re-run to resume from the one before"
                    ) from error
                damaged = error
            if _everywhere(damaged is None):
                return step, state
            reason = _first_line(damaged) if damaged is not None else "another process could not read it"
            self._set_aside(step, reason)
            below = step

    def _set_aside(self, step: int, reason: str) -> None:
        """Renames a damaged checkpoint to `<step>.damaged`, so that the resumed run can save that step again."""
        aside = paths.join(self.directory, f"{step}.damaged")
        if paths.exists(aside):  # damaged at this step before: keep both
            aside = f"{aside}.{int(time.time())}"
        log.warning("checkpoint %d in %s is damaged (%s); moved to %s, resuming from an earlier one",
                    step, self.directory, reason, aside)
        if jax.process_index() == 0:
            paths.rename(paths.join(self.directory, str(step)), aside)
            self._prune_damaged()
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"checkpoint {step} set aside")
        self._manager.reload()

    def damaged(self) -> list[str]:
        """Names of the damaged checkpoints set aside in the folder, oldest step first."""
        names = [p.name for p in epath.Path(self.directory).iterdir() if ".damaged" in p.name]
        return sorted(names, key=_damaged_order)

    def _prune_damaged(self) -> None:
        """Removes all but the DAMAGED_KEPT newest set-aside checkpoints, saying so."""
        for name in self.damaged()[:-DAMAGED_KEPT]:
            log.warning("removing the damaged checkpoint %s in %s (the newest %d are kept)",
                        name, self.directory, DAMAGED_KEPT)
            epath.Path(self.directory, name).rmtree()

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


def _damaged_order(name: str) -> tuple[int, int]:
    """'12.damaged' -> (12, 0), '12.damaged.1795000000' -> (12, 1795000000): by step, then when set aside."""
    step, _, stamp = name.partition(".damaged")
    stamp = stamp.lstrip(".")
    return int(step) if step.isdigit() else -1, int(stamp) if stamp.isdigit() else 0


def _is_corruption(error: BaseException) -> bool:
    """True when `error` (or its cause/context chain) says the checkpoint's bytes are damaged."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, json.JSONDecodeError) or any(m in str(error) for m in _CORRUPTION_MARKERS):
            return True
        error = error.__cause__ or error.__context__
    return False


def _first_line(error: BaseException) -> str:
    """The innermost cause's first line: orbax wraps tensorstore errors in pages of spec."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _agreed(step: int) -> int:
    """Process 0's `step` on every process (hosts may list a shared folder differently)."""
    if jax.process_count() == 1:
        return step
    return int(multihost_utils.broadcast_one_to_all(np.asarray(step, np.int64)))


def _everywhere(ok: bool) -> bool:
    """True on every process iff `ok` is true on every process."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _abstract(x: Any) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))


BACKBONE = "backbone"  # the top-level module that `init_from` must always load whole


def load_weights(
    directory: str, params: nnx.State, batch_stats: nnx.State, *, step: int | None = None,
    init_heads: bool = False,
) -> tuple[nnx.State, nnx.State]:
    """Parameters and BN statistics of the checkpoint at `step` (default: the newest) in `directory`.

    For `init_from` and for restoring a trained model: the optimiser state
    and step are not read, so the checkpoint may come from a run with another
    optimiser or schedule. The given states supply structure, shapes and
    shardings. Every `backbone` variable must be in the checkpoint with the
    same shape, and the checkpoint may hold no backbone variable the model
    lacks; otherwise (another backbone) a ValueError names the variable.

    The other top-level modules are the heads (`gap_fc`, `saol`). By default
    they must match too. With `init_heads` (fine-tuning with a new head: a
    run or a converted checkpoint with another class count or head) a head
    module with any variable missing from the checkpoint or of another shape
    keeps its initial values as a whole, and one line is logged saying what
    was loaded and what was initialised.
    """
    if not paths.exists(directory):  # Checkpointer would create it
        raise FileNotFoundError(
            f"init_from: {directory} does not exist: give the --workdir of a training run, or the --out "
            "of `python -m saol_jax.commands.convert_torchvision` (converted torchvision weights)"
        )
    checkpointer = Checkpointer(directory, async_save=False)
    try:
        steps = checkpointer.steps()
        if not steps:
            raise FileNotFoundError(f"init_from: no complete checkpoint in {directory}")
        step = steps[-1] if step is None else step
        raw = checkpointer.restore_raw(step)
    finally:
        checkpointer.close()
    targets = {"params": params, "batch_stats": batch_stats}
    flat_raw = {name: _flat_raw(raw.get(name, {})) for name in targets}
    problems: dict[str, list[str]] = {}  # top-level module -> why it cannot be loaded
    counts: dict[str, int] = {}
    for name, target in targets.items():
        model_keys = set()
        for path, variable in nnx.to_flat_state(target):
            key = tuple(str(k) for k in path)
            model_keys.add(key)
            counts[key[0]] = counts.get(key[0], 0) + 1
            problem = _mismatch(key, flat_raw[name], variable)
            if problem:
                problems.setdefault(key[0], []).append(problem)
        extra = sorted(k for k in flat_raw[name] if k[0] == BACKBONE and k not in model_keys)
        if extra:
            problems.setdefault(BACKBONE, []).append(
                f"the checkpoint has backbone variables the model lacks ({len(extra)}, e.g. {'/'.join(extra[0])}): "
                "another backbone architecture"
            )
    if BACKBONE in problems or (problems and not init_heads):
        raise ValueError(problems.get(BACKBONE, next(iter(problems.values())))[0])
    if init_heads:
        loaded = [m for m in counts if m not in problems]
        fresh = [m for m in counts if m in problems]
        log.info(
            "init_from %s (step %d): loaded %d arrays (%s); initialised %d arrays (%s)",
            directory, step, sum(counts[m] for m in loaded), ", ".join(loaded) or "none",
            sum(counts[m] for m in fresh),
            "; ".join(f"{m}: {problems[m][0]}" for m in fresh) or "none",
        )
    return tuple(_fill(target, flat_raw[name], keep=set(problems)) for name, target in targets.items())


def _flat_raw(raw: dict) -> dict[tuple[str, ...], Any]:
    """{path: array} of a raw restored tree ({'value': array} leaves)."""
    return {path[:-1]: value for path, value in traverse_util.flatten_dict(raw).items()}


def _mismatch(key: tuple[str, ...], flat_raw: dict, variable: Any) -> str | None:
    """Why the checkpoint's value cannot fill `variable`, or None."""
    if key not in flat_raw:
        return f"init_from: the checkpoint has no variable {'/'.join(key)}"
    shape = tuple(flat_raw[key].shape)
    if shape != tuple(variable.shape):
        return (f"init_from: {'/'.join(key)} has shape {shape} in the checkpoint, "
                f"{tuple(variable.shape)} in the model")
    return None


def _fill(target: nnx.State, flat_raw: dict[tuple[str, ...], Any], keep: Collection[str]) -> nnx.State:
    """`target` with its variables' values taken from `flat_raw` (checked by `load_weights` to fit),
    except those of the top-level modules in `keep`, which keep their values."""
    leaves = []
    for path, variable in nnx.to_flat_state(target):
        key = tuple(str(k) for k in path)
        value = variable[...] if key[0] in keep else jax.device_put(flat_raw[key], variable.sharding)
        # The same Variable types as `target`: a TrainState keeps its pytree structure.
        leaves.append((path, variable.replace(value=value)))
    return nnx.from_flat_state(leaves)
