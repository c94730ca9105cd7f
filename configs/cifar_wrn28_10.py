"""CIFAR-100 (or CIFAR-10) Wide-ResNet-28-10 with SAOL.

Command:
  python -m saol_jax.train --config configs/cifar_wrn28_10.py --workdir workdirs/wrn_c100
  ... :dataset=cifar10   ... :head=gap (GAP-FC + CutMix baseline)

Recipe (ours; the usual WRN schedule, CutMix as in docs/method.md §9): 200 epochs,
batch 128, SGD Nesterov momentum 0.9, lr 0.1, x0.2 at epochs 60, 120 and
160, weight decay 5e-4, dropout 0, pad-4 crop + flip, CutMix beta=1 p=0.5.
Sized for: one GPU (36.5M parameters); `hw=gpu8` scales batch and lr.
Expected: no published SAOL figure for WRN-28-10 and no run in results/ yet;
its GAP-FC + CutMix baseline is the `head=gap` variant of the same command.
Options: dataset=cifar100|cifar10, head=gap|gap_ms|saol|saol_ss|saol_ss_sd, hw=..., smoke.
"""

import ml_collections

from saol_jax.core import recipe


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = recipe.recipe_options(arg, dataset=recipe.CIFAR_DATASET)
    c = recipe.cifar_base(options.dataset)
    c.model.backbone = "wrn28_10"
    c.model.backbone_kwargs.dropout_rate = 0.0
    c.batch_size = 128
    recipe.sgd_schedule(c, num_epochs=200.0, lr=0.1, decay_epochs=(60, 120, 160), decay_factor=0.2,
                        weight_decay=5e-4)
    if options.smoke:
        recipe.apply_smoke(c, "wide_resnet", depth=10, widen_factor=1, dropout_rate=0.0)
    return recipe.finalise(c, options)
