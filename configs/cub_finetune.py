"""CUB-200-2011 fine-tuning of an ImageNet-pretrained ResNet-50 with SAOL (weakly supervised localisation).

Command (torchvision's ImageNet weights converted first, see saol_jax/commands/convert_torchvision.py;
CUB prepared by tfds, which downloads it from data.caltech.edu):
  python -m saol_jax.data.prepare --dataset caltech_birds2011 --data_dir ~/tensorflow_datasets
  python -m saol_jax.commands.convert_torchvision --weights resnet50.pth --arch resnet50 \
      --out workdirs/resnet50_imagenet
  python -m saol_jax.train --config configs/cub_finetune.py --workdir workdirs/cub_r50
  ... --config.init_from=OTHER_DIR (the converted weights, or another run, elsewhere)
  ... :arch=resnet101 (init_from defaults to workdirs/resnet101_imagenet)   ... :head=gap

Protocol (CUB-200-2011 WSOL, as in Choe et al. 2020 "Evaluating weakly
supervised object localization methods right"): train on the 5,994
`train` images with labels only, less the last 10% (599 images, with their
boxes) held out as `validation_split` for every choice, thresholds included
(Choe et al. hold out a separate set of images instead; CUB has none in
tfds); evaluate on the 5,794 `test` images, each
resized to 224x224 without cropping so that its one `bbox` stays valid, and
report besides top-1 the localisation of SAOL's attention, spatial and
product maps and the GAP-FC CAM (`eval/loc_*`, saol_jax.core.localisation). Train:
random-resized-crop 224 + flip, CutMix beta=1 p=0.5. The backbone comes from
`init_from` (with 1000 ImageNet classes there, only the backbone is loaded; the
SAOL head and the 200-class GAP-FC layer start fresh, and the run's log says so).
SGD Nesterov momentum 0.9, lr 0.01 at batch 64 (linear in the batch,
`hw=` variants), cosine decay over 50 epochs, weight decay 1e-4; one learning
rate for every layer. Inputs are normalised with the ImageNet mean and std
that torchvision's weights expect.
Sized for: one GPU with 24 GB or more at batch 64 (`hw=gpu1`); `hw=gpu8` gives
batch 512 and lr 0.08.
Expected time: not measured by this project (it had no accelerator or CUB
copy); 50 epochs are about 4,700 steps of 64 images at 224x224.
Expected accuracy: no run of this recipe is in results/. For orientation only: ImageNet-pretrained
ResNet-50s fine-tuned on CUB are commonly reported at about 85% top-1
classification; this recipe has not been checked against that.
Options: arch=resnet18|resnet34|resnet50|resnet101|resnet152, head=..., hw=...,
smoke (ResNet-18 at 64x64 from scratch, or from --config.init_from=DIR of a converted
ResNet-18).
"""

import ml_collections

from saol_jax.core import recipe
from saol_jax.core.options import Option
from saol_jax.data import carved_splits

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = recipe.recipe_options(arg, arch=Option("resnet50", ARCHS))
    c = recipe.base_config()
    c.dataset.name = "caltech_birds2011"
    c.dataset.train_split, c.dataset.validation_split = carved_splits(10)  # 5,395 / 599
    c.dataset.eval_split = "test"
    # ~6,000 images of varying size, decoded per epoch instead of cached
    recipe.photo_input(c, options.arch, shuffle_buffer=6_000)
    c.dataset.eval_resize = False  # resize the whole image to 224x224: the true box stays valid
    c.init_from = f"workdirs/{options.arch}_imagenet"  # python -m saol_jax.commands.convert_torchvision --out
    c.cutmix.prob = 0.5
    c.batch_size = 64
    c.eval_batch_size = 256
    recipe.sgd_schedule(c, num_epochs=50.0, lr=0.01, weight_decay=1e-4)
    c.optim.warmup_epochs = 0.0
    c.log_every_steps = 50
    c.eval_every_epochs = 5.0
    c.checkpoint_every_steps = 500
    if options.smoke:
        recipe.photo_smoke(c)
        c.init_from = ""  # from scratch unless --config.init_from names a converted ResNet-18
    return recipe.finalise(c, options)
