"""Cluttered Fashion-MNIST (a superseded localisation benchmark), a small 4-stage ResNet with SAOL + SS + SD.

Superseded by configs/target_fashion_mnist.py: a class-agnostic cue (the
biggest bright blob) localises this benchmark's item without its class
(README, "The earlier study, withdrawn"). Kept for reproduction.

Command (data prepared offline from Debian's dataset-fashion-mnist package):
  python -m saol_jax.data.prepare
  python -m saol_jax.train --config configs/cluttered_fashion_mnist.py --workdir workdirs/cluttered

The data (saol_jax.data.cluttered_fashion_mnist): 64x64 canvases, one
Fashion-MNIST item resized to 20-44 pixels at a random position among 3-6
fragments of other items, light noise, the item's true box with each image;
20,000 train / 5,000 test canvases. Every evaluation reports, besides
accuracy, the localisation of SAOL's attention, its spatial map of the
true class, their product and the GAP-FC branch's CAM against the true
boxes (`eval/loc_<map>_pointing|mass_ratio|maxboxacc_v2|maxboxacc_50|top1_loc|...`,
saol_jax.core.localisation).

Sized for: a 2-core CPU VM split into 8 CPU devices (`num_cpu_devices`), a
ResNet-10 with four stages of 16/32/64/128 channels (output grid 8x8),
3 epochs (468 steps of 128), one evaluation at the end.
Expected: no figure is quoted; the withdrawn study's runs kept no result
file (README, "The earlier study, withdrawn").
Validation: the builder writes only train and test, so the last 10% of train
(2,000 canvases) is held out as `validation_split`, where every choice (an
option, a localisation threshold) is made; training reads the other 18,000
(420 steps).
Options (after a colon): `head=gap|gap_ms|saol|saol_ss|saol_ss_sd`, `smoke`, `hw=...`.
"""

import ml_collections

from saol_jax.core import recipe


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = recipe.recipe_options(arg)
    c = recipe.base_config()
    recipe.fashion_mnist_input(c, "cluttered_fashion_mnist", mean=0.128, std=0.243)  # 18,000 / 2,000
    recipe.canvas_64_training(c, num_epochs=3.0, smoke=options.smoke)
    return recipe.finalise(c, options)
