"""Pieces every recipe file (configs/*.py) is built from.

A recipe's `get_config(arg)` receives what follows the colon in
`--config configs/<recipe>.py:<arg>`, a comma-separated list of typed
options (saol_jax.core.options): the common `smoke` (shrink to seconds on CPU),
`head=gap|gap_ms|saol|saol_ss|saol_ss_sd` (the ablation ladder) and
`hw=<variant>` (batch size for the hardware, learning rate scaled
linearly), plus the recipe's own. Recipes import only this library, so a
recipe file loads by path from any working directory.
"""

from __future__ import annotations

from typing import NamedTuple

import ml_collections

from saol_jax.core.ladder import BASE_LOSS, HEAD_LADDER, apply_head
from saol_jax.core.options import Option, parse_options
from saol_jax.data import carved_splits, default_dataset_config
from saol_jax.models.inputs import IMAGENET_MEAN, IMAGENET_STD

class Hardware(NamedTuple):
    """A hardware variant: its global batch (the learning rate follows it linearly) and its
    jax device count, which every batch must divide by."""

    batch: int
    devices: int


# TPU slices are named by their accelerator type: v4-32 is `tpu_v4_32`,
# v5litepod-16 (v5e) is `tpu_v5e_16`, v6e-8 is `tpu_v6e_8`. One device per
# chip, except v4, whose types count TensorCores, two per chip: v4-32 has 16
# devices. Per chip: 128 images on v4 and v6e (32 GiB of HBM), 64 on v5e
# (16 GiB), and at most MAX_BATCH in all (as on v4-128), within the range
# where linear scaling with warm-up holds.
MAX_BATCH = 4096


def _tpu_slice(per_chip: int, chips: int) -> Hardware:
    return Hardware(batch=min(per_chip * chips, MAX_BATCH), devices=chips)


HARDWARE: dict[str, Hardware] = {
    "cpu": Hardware(batch=64, devices=1),
    "gpu1": Hardware(batch=64, devices=1),
    "gpu8": Hardware(batch=512, devices=8),
    **{f"tpu_v4_{cores}": _tpu_slice(128, cores // 2) for cores in (8, 32, 128)},
    **{f"tpu_v5e_{chips}": _tpu_slice(64, chips) for chips in (8, 16, 32, 64)},
    **{f"tpu_v6e_{chips}": _tpu_slice(128, chips) for chips in (8, 16, 32)},
}

# Options every recipe accepts.
COMMON_OPTIONS: dict[str, Option] = {
    "smoke": Option(False),
    "head": Option("saol_ss_sd", tuple(HEAD_LADDER)),
    "hw": Option("", tuple(HARDWARE)),  # "": the recipe's own batch
}


def recipe_options(arg: str | None, **own: Option) -> ml_collections.FrozenConfigDict:
    """Parses `arg` against the common options (smoke, head, hw) and the recipe's `own`."""
    return parse_options(arg, {**COMMON_OPTIONS, **own})


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
        {"num_stages": 3, "att_kernel": 1, "att_width": 128, "mid_width": 128, "attention_floor": 0.0}
    )
    c.model.dtype = "float32"
    c.model.ghost_bn_size = 0

    c.cutmix = ml_collections.ConfigDict({"beta": 1.0, "prob": 0.5, "group_size": 0})
    # Loss weights of the full ladder and the SS-2 form `ss2_form` (one of saol_jax.core.losses.SS2_FORMS):
    # saol_jax.core.ladder.BASE_LOSS, the only default of these fields.
    c.loss = ml_collections.ConfigDict(BASE_LOSS)

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 0.1
    c.optim.base_batch_size = 0  # > 0: lr is for this batch size, scaled linearly
    c.optim.optimizer = "sgd"  # or "adamw" (saol_jax.core.optim.OPTIMIZERS)
    c.optim.momentum = 0.9  # SGD's momentum; AdamW's beta1
    c.optim.nesterov = True  # SGD only
    c.optim.b2 = 0.999  # AdamW's beta2
    c.optim.weight_decay = 1e-4
    c.optim.schedule = "step"
    c.optim.decay_epochs = (150, 225)
    c.optim.decay_factor = 0.1
    c.optim.warmup_epochs = 0.0

    c.batch_size = 64
    # > 1: each optimiser step averages the gradients of this many micro-batches of
    # batch_size / grad_accum_steps (a recipe's global batch on fewer devices; saol_jax.core.train_step).
    c.grad_accum_steps = 1
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
    # > 0: a jax.profiler trace of this many steps, from the 3rd of each (re)start, into
    # WORKDIR/tensorboard (TensorBoard's Profile tab); process 0 only.
    c.profile_steps = 0
    c.init_from = ""  # a workdir whose latest weights initialise a new run
    c.num_devices = 0  # 0: every visible device
    c.num_cpu_devices = 0  # > 0: split a CPU host into this many devices
    return c


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
    if hw not in HARDWARE:
        raise ValueError(f"hw must be one of {', '.join(HARDWARE)}, got {hw!r}")
    if config.optim.base_batch_size <= 0:
        config.optim.base_batch_size = config.batch_size
    config.batch_size = HARDWARE[hw].batch
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


def finalise(config: ml_collections.ConfigDict, options: ml_collections.FrozenConfigDict) -> ml_collections.ConfigDict:
    """Applies the common options; the returned config is locked (typos in overrides fail)."""
    apply_head(config, options.head)
    apply_hardware(config, options.hw)
    config.lock()
    return config


CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


# The `dataset=` option of the CIFAR recipes.
CIFAR_DATASET = Option("cifar100", tuple(CIFAR_STATS))


def cifar_base(dataset: str) -> ml_collections.ConfigDict:
    """CIFAR-10/100 with pad-4 crop + flip and CutMix p=0.5 (docs/method.md §9); the last 10% of
    train (5,000 images) held out as the validation split."""
    if dataset not in CIFAR_STATS:
        raise ValueError(f"dataset must be one of {', '.join(CIFAR_STATS)}, got {dataset!r}")
    c = base_config()
    c.dataset.name = dataset
    c.dataset.train_split, c.dataset.validation_split = carved_splits(10)  # 45,000 / 5,000
    c.dataset.augment = "cifar"
    c.dataset.mean, c.dataset.std = CIFAR_STATS[dataset]
    c.model.saol.update({"att_width": 128, "mid_width": 128})
    c.cutmix.prob = 0.5
    c.eval_batch_size = 1000
    c.eval_every_epochs = 5.0
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    return c


def canvas_64_training(c: ml_collections.ConfigDict, *, num_epochs: float, smoke: bool) -> None:
    """The network and schedule of the 64x64 localisation benchmarks' recipes: a ResNet-10
    (16/32/64/128, output grid 8x8) on 8 CPU devices, CutMix p=0.5, cosine SGD, one evaluation
    at the end of `num_epochs`."""
    c.model.backbone = "resnet_cifar"
    c.model.backbone_kwargs.depth = 10
    c.model.backbone_kwargs.widths = (16, 32, 64, 128)
    c.model.saol.update({"att_width": 64, "mid_width": 64})
    c.cutmix.prob = 0.5
    c.batch_size = 128
    c.eval_batch_size = 1000
    c.num_epochs = num_epochs
    c.optim.lr = 0.1
    c.optim.schedule = "cosine"
    c.optim.warmup_epochs = 0.2
    c.optim.weight_decay = 5e-4
    c.eval_every_epochs = num_epochs  # one evaluation, at the end
    c.log_every_steps = 25
    c.checkpoint_every_steps = 100
    c.num_cpu_devices = 8
    if smoke:
        apply_smoke(c, "resnet_cifar", depth=10, widths=(8, 8, 16, 16))


def sgd_schedule(c: ml_collections.ConfigDict, *, num_epochs: float, lr: float, weight_decay: float,
                 decay_epochs: tuple[int, ...] = (), decay_factor: float | None = None) -> None:
    """The run's length and its SGD: the learning rate times `decay_factor` (None: the base
    config's) at each of `decay_epochs`, or a cosine decay without them."""
    c.num_epochs = num_epochs
    c.optim.lr = lr
    c.optim.weight_decay = weight_decay
    c.optim.schedule = "step" if decay_epochs else "cosine"
    if decay_epochs:
        c.optim.decay_epochs = tuple(decay_epochs)
    if decay_factor is not None:
        c.optim.decay_factor = decay_factor


def fashion_mnist_input(c: ml_collections.ConfigDict, name: str, mean: float, std: float) -> None:
    """A dataset of Fashion-MNIST's grayscale items (`name`, pixel `mean` and `std` of its train
    split), CutMix its only augmentation; the last 10% of train held out as the validation split."""
    c.dataset.name = name
    c.dataset.train_split, c.dataset.validation_split = carved_splits(10)
    c.dataset.augment = "none"
    c.dataset.mean = (mean,)
    c.dataset.std = (std,)


def photo_input(c: ml_collections.ConfigDict, arch: str, *, shuffle_buffer: int) -> None:
    """ImageNet-sized photos: 224x224 inception crops read uncached, ImageNet's normalisation, the
    backbone `arch` with a SAOL head of width 256."""
    c.dataset.image_size = 224
    c.dataset.augment = "inception"
    c.dataset.cache = False
    c.dataset.shuffle_buffer = shuffle_buffer
    c.dataset.mean = IMAGENET_MEAN
    c.dataset.std = IMAGENET_STD
    c.model.backbone = arch
    c.model.saol.update({"att_width": 256, "mid_width": 256})


def photo_smoke(c: ml_collections.ConfigDict) -> None:
    """`apply_smoke` for the photo recipes: a ResNet-18 on 64x64 crops, cached."""
    apply_smoke(c, "resnet18")
    c.dataset.image_size = 64
    c.dataset.cache = True
