"""Checks a run's config against its dataset and devices before anything is compiled.

Every mistake a newcomer can make in a config ends in this module as one `ConfigError`
whose message says what to change, instead of a traceback minutes into a
run (or, worse, a run that silently does something else).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections

from saol_jax.core import paths
from saol_jax.core.losses import SS2_FORMS, WEIGHT_TO_TERM
from saol_jax.core.optim import OPTIMIZERS, SCHEDULES
from saol_jax.data import BACKENDS, DatasetInfo
from saol_jax.data.transforms import AUGMENTATIONS
from saol_jax.models import BACKBONES, DTYPES, HEADS


class ConfigError(ValueError):
    """A config that cannot run; the message names the field and the fix."""


def check_config(config: ml_collections.ConfigDict, info: DatasetInfo, num_devices: int) -> None:
    """Raises ConfigError for the first problem found in `config` for this dataset and mesh."""
    for problem in _problems(config, info, num_devices):
        raise ConfigError(problem)


def check_fields(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for the first field outside its choices or range; needs no dataset or device."""
    for problem in _field_problems(config):
        raise ConfigError(problem)


def _problems(config: ml_collections.ConfigDict, info: DatasetInfo, num_devices: int):
    yield from _field_problems(config)
    for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints", "grad_accum_steps"):
        value = config[field]
        if value <= 0:
            yield f"{field}={value} must be at least 1 (--config.{field}=N)"
    for field in ("batch_size", "eval_batch_size"):
        value = config[field]
        if value <= 0 or value % num_devices:
            yield (f"{field}={value} must be a positive multiple of the {num_devices} devices "
                   f"(--config.{field}=N, or use fewer devices with --config.num_devices)")
    accum, group = config.grad_accum_steps, config.cutmix.group_size
    micro = config.batch_size // max(accum * num_devices, 1)  # per device
    if accum > 1 and config.batch_size % (accum * num_devices):
        yield (f"batch_size={config.batch_size} must be a multiple of grad_accum_steps x devices = "
               f"{accum} x {num_devices} (--config.batch_size=N or --config.grad_accum_steps=K)")
    elif accum > 1 and group and micro % group:
        yield (f"cutmix.group_size={group} must divide the per-device micro-batch of {micro} "
               "with grad_accum_steps > 1 (--config.cutmix.group_size=N, 0 for that micro-batch)")
    floor = config.model.saol.get("attention_floor", 0.0)
    if config.model.head == "saol" and not 0.0 <= floor < 1.0:
        yield f"model.saol.attention_floor={floor} must be in [0, 1) (--config.model.saol.attention_floor=EPS)"
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
        yield "set num_epochs or num_train_steps to a positive value"
    if config.eval_every_epochs <= 0:
        yield f"eval_every_epochs={config.eval_every_epochs} must be positive"
    channels = info.image_shape[2]
    scale = config.loss.get("paste_clean_scale", 1)
    if scale >= 1 and (info.image_shape[0] % scale or info.image_shape[1] % scale):
        yield (f"loss.paste_clean_scale={scale} must divide the image size {info.image_shape[0]}x"
               f"{info.image_shape[1]} (--config.loss.paste_clean_scale=S)")
    for field in ("mean", "std"):
        values = tuple(config.dataset[field])
        if len(values) not in (1, channels):  # one value stands for every channel
            example = ", ".join(["0.5"] * channels)
            yield (f"dataset.{field} has {len(values)} values but {info.name} images have {channels} "
                   f"channel(s): give one value per channel, e.g. --config.dataset.{field}='({example},)'")
    if any(s <= 0 for s in config.dataset.std):
        yield f"dataset.std={tuple(config.dataset.std)} must be positive"
    if info.num_eval == 0:
        yield (f"the eval split {info.eval_split!r} of {info.name} is empty: "
               f"choose another with --config.dataset.eval_split=SPLIT")
    if info.num_train < config.batch_size:
        yield (f"the train split {info.train_split!r} of {info.name} has {info.num_train} examples, "
               f"fewer than batch_size={config.batch_size}")
    yield from _validation_problems(info)


def _validation_problems(info: DatasetInfo):
    """The validation split (`dataset.validation_split`) must hold examples of its own."""
    if info.validation_split is None:
        return
    fix = "choose another with --config.dataset.validation_split=SPLIT"
    if info.num_validation == 0:
        yield f"the validation split {info.validation_split!r} of {info.name} is empty: {fix}"
    elif info.validation_shared:
        yield (f"the validation split {info.validation_split!r} of {info.name} shares {info.validation_shared} "
               f"examples with the train split {info.train_split!r} or the eval split {info.eval_split!r}: "
               f"{fix}, e.g. train_split='train[:90%]' with validation_split='train[90%:]'")


# ----------------------------------------------------------------- one field at a time
# Enumerated fields, checked against the constants the code that reads them defines.
CHOICES: dict[str, Sequence[str]] = {
    "model.backbone": tuple(sorted(BACKBONES)),
    "model.head": HEADS,
    "model.dtype": tuple(DTYPES),
    "loss.ss2_form": SS2_FORMS,
    "optim.schedule": SCHEDULES,
    "optim.optimizer": OPTIMIZERS,
    "dataset.augment": AUGMENTATIONS,
    "dataset.backend": tuple(BACKENDS),
}

_INF = float("inf")

# Numeric fields: (low, high, low_closed, high_closed); a sequence field is checked value by value.
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "optim.lr": (0.0, _INF, False, False),
    "optim.momentum": (0.0, 1.0, True, False),
    "optim.b2": (0.0, 1.0, True, False),
    "optim.weight_decay": (0.0, _INF, True, False),
    "optim.decay_factor": (0.0, 1.0, False, True),
    "optim.decay_epochs": (0.0, _INF, True, False),
    "optim.warmup_epochs": (0.0, _INF, True, False),
    "optim.base_batch_size": (0, _INF, True, False),
    "cutmix.prob": (0.0, 1.0, True, True),
    "cutmix.beta": (0.0, _INF, False, False),
    "cutmix.group_size": (0, _INF, True, False),
    "dataset.color_jitter": (0.0, _INF, True, False),
    "dataset.lighting": (0.0, _INF, True, False),
    "dataset.shuffle_buffer": (1, _INF, True, False),
    "dataset.prefetch": (0, _INF, True, False),
    "dataset.workers": (0, _INF, True, False),
    "dataset.host_shards": (0, _INF, True, False),
    "dataset.image_size": (1, _INF, True, False),  # None (unset) is not checked
    "model.ghost_bn_size": (0, _INF, True, False),
    "model.saol.num_stages": (1, _INF, True, False),
    "model.saol.att_kernel": (1, _INF, True, False),
    "model.saol.att_width": (1, _INF, True, False),
    "model.saol.mid_width": (1, _INF, True, False),
    **{f"loss.{weight}": (0.0, _INF, True, False) for weight in WEIGHT_TO_TERM},
    "loss.paste_clean_fraction": (0.0, 1.0, True, True),
    "loss.paste_clean_scale": (1, _INF, True, False),
    "num_epochs": (0.0, _INF, True, False),  # 0 with num_train_steps > 0; both unset is refused below
    "profile_steps": (0, _INF, True, False),
    "num_devices": (0, _INF, True, False),
    "num_cpu_devices": (0, _INF, True, False),
}


def field_value(config: ml_collections.ConfigDict | dict, dotted: str):
    """`config`'s value at 'a.b.c' (a ConfigDict, or a run's config as a dict), or None when it has no
    such field."""
    node = config
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError):  # no such key, or a leaf where a section was expected
            return None
    return node


def _interval(low: float, high: float, low_closed: bool, high_closed: bool) -> str:
    """'in [0, 1)', '> 0', '>= 1' and the like."""
    show = lambda x: f"{x:g}"  # noqa: E731
    if high == _INF:
        return f"{'>=' if low_closed else '>'} {show(low)}"
    return f"in {'[' if low_closed else '('}{show(low)}, {show(high)}{']' if high_closed else ')'}"


def _field_problems(config: ml_collections.ConfigDict):
    """One message per enumerated field outside its choices and numeric field outside its range."""
    for name, choices in CHOICES.items():
        value = field_value(config, name)
        if value is not None and value not in choices:
            yield f"{name}={value!r} is not one of {', '.join(choices)} (--config.{name}=NAME)"
    for name, (low, high, low_closed, high_closed) in RANGES.items():
        value = field_value(config, name)
        for item in (value if isinstance(value, (tuple, list)) else (value,)):
            if item is None or isinstance(item, str):
                continue
            above = item >= low if low_closed else item > low
            below = item <= high if high_closed else item < high
            if not (above and below):  # NaN fails both
                yield (f"{name}={item!r} must be {_interval(low, high, low_closed, high_closed)} "
                       f"(--config.{name}=X)")


def check_workdir(workdir: str) -> None:
    """Creates `workdir` if needed and checks that files can be written in it."""
    if paths.is_url(workdir):
        return  # checked by the first write; no cheap probe for object stores
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
        with open(probe, "w", encoding="utf-8") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ConfigError(
            f"workdir {workdir} is not writable ({error.strerror or error}): "
            "choose another --workdir"
        ) from None
