"""Fashion-MNIST, a small CIFAR-style ResNet with SAOL + SS + SD: the default recipe.

Command (data prepared offline from Debian's dataset-fashion-mnist package):
  python -m saol_jax.data.prepare
  python -m saol_jax.train --config configs/fashion_mnist.py --workdir workdirs/fashion_mnist

Sized for: a 2-core CPU laptop/VM, split into 8 CPU devices (`num_cpu_devices`)
that run the same sharded step as a multi-GPU host; XLA's CPU convolutions
are faster per image on small per-device batches. CutMix (p=0.5) is the only
augmentation: in a run this short, pad-crop + flip on top of it cost accuracy
in a comparison made before the validation carve (no result file kept).
Expected: accuracy from the Fashion-MNIST study's result files
(results/fashion_mnist-study_fashion_mnist/), rendered in the README's
"Results measured here"; each file records its run's step and config.
Validation: the last 10% of tfds's train split (6,000 images, class balance checked in
tests/test_data.py) is held out as `validation_split` and evaluated
for every choice; training reads the other 54,000 (1474 steps).
Options (after a colon): `head=gap|gap_ms|saol|saol_ss|saol_ss_sd`, `smoke`, `hw=...`,
`backbone=resnet|vit|convnext` (saol_jax.core.recipe_backbones: a small ViT or ConvNeXt instead of the ResNet).
"""

import ml_collections

from saol_jax.core import recipe, recipe_backbones


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = recipe.recipe_options(arg, backbone=recipe_backbones.BACKBONE)
    c = recipe.base_config()
    recipe.fashion_mnist_input(c, "fashion_mnist", mean=0.286, std=0.353)  # 54,000 train / 6,000 validation
    c.model.backbone = "resnet_cifar"
    c.model.backbone_kwargs.depth = 8
    c.model.backbone_kwargs.widths = (32, 64, 128)
    c.model.saol.update({"att_width": 64, "mid_width": 64})
    c.cutmix.prob = 0.5
    c.batch_size = 128
    c.eval_batch_size = 400
    recipe.sgd_schedule(c, num_epochs=3.5, lr=0.1, weight_decay=5e-4)
    c.optim.warmup_epochs = 0.2
    c.eval_every_epochs = c.num_epochs  # one evaluation, at the end
    c.log_every_steps = 50
    c.checkpoint_every_steps = 200
    c.num_cpu_devices = 8
    if options.smoke:
        recipe.apply_smoke(c, "resnet_cifar", depth=8, widths=(8, 16, 32))
    recipe_backbones.apply_backbone(c, options.backbone, image_size=28, smoke=options.smoke)
    return recipe.finalise(c, options)
