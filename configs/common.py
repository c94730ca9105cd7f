"""Pieces shared by every recipe: the base config and the `:option` parser.

A recipe's `get_config(arg)` receives what follows the colon in
`--config configs/<recipe>.py:<arg>`, a comma-separated list of options:
`smoke` (shrink to seconds on CPU), `head=gap|saol|saol_ss|saol_ss_sd` (the
ablation ladder), `hw=<variant>` (batch size for the hardware, learning rate
scaled linearly) and the recipe's own options.
"""

from __future__ import annotations

import ml_collections

from saol_jax.data import default_dataset_config

# The ablation ladder of SPEC 6: loss weights (saol, ss1, ss2, sd, gap) per rung.
HEAD_LADDER: dict[str, dict[str, float]] = {
    # GAP-FC + CutMix: the baseline.
    "gap": {"saol": 0.0, "ss1": 0.0, "ss2": 0.0, "sd": 0.0, "gap": 1.0},
    # SAOL trained by its own mixed-label CE; the GAP-FC branch is left untrained.
    "saol": {"saol": 1.0, "ss1": 0.0, "ss2": 0.0, "sd": 0.0, "gap": 0.0},
    # + location-specific self-supervision (SS-1, SS-2).
    "saol_ss": {"saol": 1.0, "ss1": 1.0, "ss2": 1.0, "sd": 0.0, "gap": 0.0},
    # + self-distillation into the GAP-FC branch, which also gets its own CE.
    "saol_ss_sd": {"saol": 1.0, "ss1": 1.0, "ss2": 1.0, "sd": 1.0, "gap": 1.0},
}

# Global batch sizes of the hardware variants (learning rate follows linearly).
HARDWARE_BATCH: dict[str, int] = {
    "cpu": 64,
    "gpu1": 64,
    "gpu8": 512,
    "tpu_v4_8": 512,
    "tpu_v4_32": 2048,
    "tpu_v4_128": 4096,
}


def base_config() -> ml_collections.ConfigDict:
    """Fields every recipe has; recipes override what differs."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = default_dataset_config()
    # Per-channel normalisation of [0, 1] pixels, applied on device.
    c.dataset.mean = (0.5, 0.5, 0.5)
    c.dataset.std = (0.25, 0.25, 0.25)

    c.model = ml_collections.ConfigDict()
    c.model.backbone = "resnet20"
    c.model.backbone_kwargs = ml_collections.ConfigDict()
    c.model.head = "saol"
    c.model.saol = ml_collections.ConfigDict(
        {"num_stages": 3, "att_kernel": 1, "att_width": 128, "mid_width": 128}
    )
    c.model.dtype = "float32"
    c.model.ghost_bn_size = 0

    c.cutmix = ml_collections.ConfigDict({"beta": 1.0, "prob": 0.5, "group_size": 0})
    c.loss = ml_collections.ConfigDict(HEAD_LADDER["saol_ss_sd"])
    c.loss.ss2_form = "renorm"  # SS-2 form: renorm | mass_mix | paste (saol_jax.losses)

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 0.1
    c.optim.base_batch_size = 0  # > 0: lr is for this batch size, scaled linearly
    c.optim.momentum = 0.9
    c.optim.nesterov = True
    c.optim.weight_decay = 1e-4
    c.optim.schedule = "step"
    c.optim.decay_epochs = (150, 225)
    c.optim.decay_factor = 0.1
    c.optim.warmup_epochs = 0.0

    c.batch_size = 64
    c.eval_batch_size = 256
    c.num_epochs = 300.0
    c.num_train_steps = -1  # > 0 overrides num_epochs
    c.log_every_steps = 100
    c.eval_every_epochs = 10.0
    # SAOL heads: also measure how the maps follow the pasted box on CutMix'ed eval
    # images (eval/cutmix_*: a check of label mixing, not object localisation).
    c.eval_cutmix_maps = True
    c.checkpoint_every_steps = 2000
    c.keep_checkpoints = 3
    c.init_from = ""  # a workdir whose latest weights initialise a new run
    c.num_devices = 0  # 0: every visible device
    c.num_cpu_devices = 0  # > 0: split a CPU host into this many devices
    return c


def parse_options(arg: str | None, **defaults: str) -> dict[str, str]:
    """'smoke,head=gap' -> {'smoke': 'true', 'head': 'gap', **defaults}; unknown keys are errors."""
    options = dict(defaults)
    options.setdefault("smoke", "false")
    options.setdefault("head", "saol_ss_sd")
    options.setdefault("hw", "")
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in options:
            raise ValueError(f"unknown config option {key!r}; valid: {', '.join(sorted(options))}")
        options[key] = value.strip() if value else "true"
    return options


def apply_head(config: ml_collections.ConfigDict, head: str) -> None:
    """Selects a rung of the ablation ladder: head and loss weights (`loss.ss2_form` is kept)."""
    if head not in HEAD_LADDER:
        raise ValueError(f"head must be one of {', '.join(HEAD_LADDER)}, got {head!r}")
    config.model.head = "gap" if head == "gap" else "saol"
    config.loss.update(HEAD_LADDER[head])


# Linear warm-up (epochs) once the batch grows this many times over the recipe's
# (the large-batch practice of Goyal et al., 2017).
LARGE_BATCH_FACTOR = 4
LARGE_BATCH_WARMUP_EPOCHS = 5.0


def apply_hardware(config: ml_collections.ConfigDict, hw: str) -> None:
    """Sets the global batch for `hw` and scales the learning rate linearly from the recipe's.

    Batches at least LARGE_BATCH_FACTOR times the recipe's also get a linear
    warm-up of LARGE_BATCH_WARMUP_EPOCHS epochs.
    """
    if not hw:
        return
    if hw not in HARDWARE_BATCH:
        raise ValueError(f"hw must be one of {', '.join(HARDWARE_BATCH)}, got {hw!r}")
    if config.optim.base_batch_size <= 0:
        config.optim.base_batch_size = config.batch_size
    config.batch_size = HARDWARE_BATCH[hw]
    config.eval_batch_size = max(config.eval_batch_size, config.batch_size)
    if config.batch_size >= LARGE_BATCH_FACTOR * config.optim.base_batch_size:
        config.optim.warmup_epochs = max(config.optim.warmup_epochs, LARGE_BATCH_WARMUP_EPOCHS)


def apply_smoke(config: ml_collections.ConfigDict, backbone: str, **backbone_kwargs) -> None:
    """Shrinks a recipe to a few seconds on CPU: tiny backbone, batch and run."""
    config.model.backbone = backbone
    config.model.backbone_kwargs = ml_collections.ConfigDict(backbone_kwargs)
    config.model.saol.update({"att_width": 8, "mid_width": 8})
    config.batch_size = 16
    config.eval_batch_size = 32
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.eval_every_epochs = 1e9  # only the final evaluation
    config.checkpoint_every_steps = 2
    config.dataset.shuffle_buffer = 256
    config.optim.base_batch_size = 0
    config.optim.warmup_epochs = 0.0


def finalise(config: ml_collections.ConfigDict, options: dict[str, str]) -> ml_collections.ConfigDict:
    """Applies the common options; the returned config is locked (typos in overrides fail)."""
    apply_head(config, options["head"])
    apply_hardware(config, options["hw"])
    config.lock()
    return config


CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def cifar_base(dataset: str) -> ml_collections.ConfigDict:
    """CIFAR-10/100 with pad-4 crop + flip and CutMix p=0.5 (SPEC 8)."""
    if dataset not in CIFAR_STATS:
        raise ValueError(f"dataset must be one of {', '.join(CIFAR_STATS)}, got {dataset!r}")
    c = base_config()
    c.dataset.name = dataset
    c.dataset.augment = "cifar"
    c.dataset.mean, c.dataset.std = CIFAR_STATS[dataset]
    c.model.saol.update({"att_width": 128, "mid_width": 128})
    c.cutmix.prob = 0.5
    c.eval_batch_size = 1000
    c.eval_every_epochs = 5.0
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    return c
