"""ImageNet ResNet-50/101/152 (v1.5) with SAOL: the CutMix paper's ImageNet recipe.

Command (ImageNet prepared by tfds from its manual download, see README):
  python -m saol_jax.train --config configs/imagenet_resnet.py --workdir gs://BUCKET/r50 \
      --config.dataset.data_dir=gs://BUCKET/tfds
  ... :arch=resnet101   ... :arch=resnet152   ... :head=gap   ... :hw=tpu_v4_32

Recipe (docs/method.md §9): 300 epochs, batch 256, SGD Nesterov momentum 0.9, lr 0.1,
x0.1 every 75 epochs, weight decay 1e-4, random-resized-crop 224 + flip +
colour jitter 0.4 + PCA lighting 0.1, CutMix beta=1 p=1.0; eval resize 256,
centre crop 224. SAOL widths 256. The learning rate scales linearly with the
batch (`hw=` variants).
Sized for: 8 GPUs at batch 256 (`hw=gpu8` gives batch 512 and lr 0.2), or a
TPU v4-32 (`hw=tpu_v4_32`: batch 2048, lr 0.8). Variants with at least 4x the
recipe's batch also get a 5-epoch linear warm-up (saol_jax.core.recipe.apply_hardware).
Time: not measured by this project (it had no accelerator).
Expected top-1 error (published by the CutMix paper, GAP-FC + CutMix): ResNet-50
21.40, ResNet-101 20.17 (GAP-FC without CutMix: ResNet-50 23.68). SAOL's best
published ImageNet top-1 is 81.01% (the SAOL paper does not name its backbone);
no run of this recipe is in results/.
Validation: `validation` is ImageNet's usual test set in this recipe (the eval split),
so the last 1% of tfds's train split (12,812 images, about 13 a class: a
slice of tfds's hashed order, not stratified by class) is held out as
`validation_split` for every choice; training reads the other 1,268,355.
Options: arch=resnet50|resnet101|resnet152, head=..., hw=..., smoke.
"""

import ml_collections

from saol_jax.core import recipe
from saol_jax.core.options import Option
from saol_jax.data import carved_splits

ARCHS = ("resnet50", "resnet101", "resnet152")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = recipe.recipe_options(arg, arch=Option("resnet50", ARCHS))
    c = recipe.base_config()
    c.dataset.name = "imagenet2012"
    c.dataset.eval_split = "validation"  # the test figures
    c.dataset.train_split, c.dataset.validation_split = carved_splits(1)  # 1,268,355 / 12,812
    recipe.photo_input(c, options.arch, shuffle_buffer=16_384)
    c.dataset.color_jitter = 0.4
    c.dataset.lighting = 0.1
    c.dataset.eval_resize = True
    c.cutmix.prob = 1.0
    c.batch_size = 256
    c.eval_batch_size = 1024
    recipe.sgd_schedule(c, num_epochs=300.0, lr=0.1, decay_epochs=(75, 150, 225), weight_decay=1e-4)
    c.log_every_steps = 200
    c.eval_every_epochs = 5.0
    c.checkpoint_every_steps = 5000
    if options.smoke:
        recipe.photo_smoke(c)
    return recipe.finalise(c, options)
