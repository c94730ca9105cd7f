"""Target Fashion-MNIST (the class decides the location), a small 4-stage ResNet with SAOL + SS + SD.

Command (data prepared offline from Debian's dataset-fashion-mnist package):
  python -m saol_jax.data.prepare
  python -m saol_jax.train --config configs/target_fashion_mnist.py --workdir workdirs/target

The data (saol_jax.data.target_fashion_mnist): 64x64 canvases, one target
item from five classes (T-shirt/top, Trouser, Dress, Sandal, Bag; the
label) among 2-4 distractor items from the five others, every item with
the same size (longer side 16-32 px), brightness (gain 0.6-1.0) and
position distributions, touching and overlapping up to a quarter of each
box; the target's box with each image. 20,000 train / 5,000 validation
(disjoint Fashion-MNIST train images) / 5,000 test canvases. Choices
(thresholds, parameters) are made on `validation`
(`config.dataset.validation_split`); evaluation reports `test`.

Why no map can localise it without the class: brightness, size and
position are drawn alike for the target and the distractors, so the
largest bright component of the raw image, the mean-intensity map on the
8x8 output grid sent through the localisation pipeline, a centred box of
the mean size and a random item all stay at or below 0.27 box accuracy at
IoU 0.5 (`python -m saol_jax.studies.baselines`, results/benchmark_baselines/,
docs/method.md).

Sized for: a 2-core CPU VM split into 8 CPU devices (`num_cpu_devices`), a
ResNet-10 with four stages of 16/32/64/128 channels (output grid 8x8),
2 epochs (312 steps of 128), one evaluation at the end, as the cluttered
recipe but two thirds of its steps.
Expected: the study's result files, results/target_fashion_mnist-study_target/
(each run's accuracy, localisation and wall time), rendered in the README's
"Localisation benchmark: target Fashion-MNIST"; chance top-1 is 20%.
Options (after a colon): `head=gap|gap_ms|saol|saol_ss|saol_ss_sd`, `smoke`, `hw=...`,
`backbone=resnet|vit|convnext` (saol_jax.core.recipe_backbones: a small ViT or ConvNeXt instead of the ResNet).
"""

import ml_collections

from saol_jax.core import recipe, recipe_backbones


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = recipe.recipe_options(arg, backbone=recipe_backbones.BACKBONE)
    c = recipe.base_config()
    c.dataset.name = "target_fashion_mnist"
    c.dataset.eval_split = "test"
    c.dataset.validation_split = "validation"  # the benchmark's own split, for every choice
    c.dataset.augment = "none"  # CutMix is the only augmentation, as in the other Fashion-MNIST recipes
    c.dataset.mean = (0.146,)  # pixel mean and std of the train split
    c.dataset.std = (0.238,)
    recipe.canvas_64_training(c, num_epochs=2.0, smoke=options.smoke)
    recipe_backbones.apply_backbone(c, options.backbone, image_size=64, smoke=options.smoke)
    return recipe.finalise(c, options)
