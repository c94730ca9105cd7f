"""What makes two runs the same run, so that a resume never continues a different one.

A workdir keeps `run.json`: the config fields that define the training
trajectory (model, losses, data, batch, seed, optimiser and schedule) and the device and
host counts (they set BatchNorm and CutMix groups). Re-running in that
workdir with any of them changed is refused with the list of changes,
instead of silently mixing two runs' checkpoints and logs. Fields that
only change how a run is observed or stored (log, eval and checkpoint
frequencies, eval batch size, data_dir, keep_checkpoints, profiling), and
its length, may change.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from saol_jax.core import paths

IDENTITY_FILE = "run.json"
# Top-level config fields that do not change what the steps taken so far trained. The
# length (num_epochs, num_train_steps) may change so that a finished run can be extended;
# a schedule that depends on it (cosine) then follows the new length from the resumed step.
FREE_FIELDS = frozenset({
    "log_every_steps", "eval_every_epochs", "eval_cutmix_maps", "checkpoint_every_steps",
    "keep_checkpoints", "eval_batch_size", "init_from", "num_cpu_devices", "num_devices",
    "num_epochs", "num_train_steps", "profile_steps",
})
# Dataset fields that only say where or how fast data is read, or what is evaluated besides
# training (the validation split; the train split it is carved from is part of the identity).
FREE_DATASET_FIELDS = frozenset({"data_dir", "prefetch", "cache", "shuffle_buffer", "workers", "validation_split"})
# Loss fields that only shape the SS-2 term: with its weight `loss.ss2` at 0 (GAP-FC, SAOL alone) they
# change nothing the run trains, so a recipe whose default form changes still resumes those runs.
SS2_ONLY_FIELDS = frozenset({"loss.ss2_form", "loss.paste_clean_fraction", "loss.paste_clean_scale"})


class RunChangedError(ValueError):
    """The workdir holds a run with another identity; the message lists the changes and the ways out."""


def identity(config: ml_collections.ConfigDict, *, num_devices: int, num_processes: int) -> dict[str, Any]:
    """The run-defining fields of `config`, flattened ('model.saol.att_width': 64, ...)."""
    flat = _flatten(config.to_dict())
    fields = {
        key: value for key, value in flat.items()
        if key.split(".")[0] not in FREE_FIELDS
        and not (key.startswith("dataset.") and key.split(".")[1] in FREE_DATASET_FIELDS)
    }
    fields = _defining(fields)
    fields["devices"] = num_devices
    fields["processes"] = num_processes
    return fields


def _defining(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` without SS2_ONLY_FIELDS where the SS-2 weight is 0."""
    if fields.get("loss.ss2"):
        return fields
    return {key: value for key, value in fields.items() if key not in SS2_ONLY_FIELDS}


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def check_same_run(workdir: str, current: dict[str, Any]) -> None:
    """Raises RunChangedError if `workdir`'s recorded identity differs from `current`."""
    path = paths.join(workdir, IDENTITY_FILE)
    if not paths.exists(path):
        return
    recorded = paths.read_json(path)
    # A field added to the config after the run was recorded held its default value then.
    recorded = _defining({**_defaults_of(current.keys() - recorded.keys()), **recorded})
    changed = sorted(key for key in recorded.keys() | current.keys() if recorded.get(key) != current.get(key))
    if changed:
        shown = ", ".join(f"{k}: {recorded.get(k)!r} -> {current.get(k)!r}" for k in changed[:6])
        more = f" (and {len(changed) - 6} more)" if len(changed) > 6 else ""
        raise RunChangedError(
            f"{workdir} holds a run with another config ({shown}{more}); nothing was changed there. "
            f"Train in a new --workdir, or start from that run's weights with "
            f"--config.init_from={workdir} in a new --workdir"
        )


def _defaults_of(fields: set[str]) -> dict[str, Any]:
    """The base config's values of the flattened `fields` it has."""
    from saol_jax.core import recipe  # the recipe imports config machinery this module does not otherwise need

    defaults = _flatten(recipe.base_config().to_dict())
    return {key: defaults[key] for key in fields if key in defaults}


def record(workdir: str, current: dict[str, Any]) -> None:
    paths.write_json(paths.join(workdir, IDENTITY_FILE), current)
