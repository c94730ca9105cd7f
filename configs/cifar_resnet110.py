"""CIFAR-100 (or CIFAR-10) ResNet-110 with SAOL.

Command:
  python -m saol_jax.train --config configs/cifar_resnet110.py --workdir workdirs/r110_c100
  ... :dataset=cifar10   ... :head=gap (GAP-FC + CutMix baseline)

Recipe (ours; the CutMix schedule of docs/method.md §9 at ResNet-110's usual batch):
300 epochs, batch 128, SGD Nesterov momentum 0.9, lr 0.1, x0.1 at epochs 150
and 225, weight decay 1e-4, pad-4 crop + flip, CutMix beta=1 p=0.5.
Sized for: one GPU (1.7M parameters); runs on CPU too, slowly.
Expected: neither the SAOL nor the CutMix paper reports this backbone, and no
run of it is in results/; `head=gap` trains the GAP-FC + CutMix baseline to
compare with (python -m saol_jax.studies.ablate runs the whole ladder).
Options: dataset=cifar100|cifar10, head=gap|gap_ms|saol|saol_ss|saol_ss_sd, hw=..., smoke.
"""

import ml_collections

from saol_jax.core import recipe


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = recipe.recipe_options(arg, dataset=recipe.CIFAR_DATASET)
    c = recipe.cifar_base(options.dataset)
    c.model.backbone = "resnet110"
    c.batch_size = 128
    recipe.sgd_schedule(c, num_epochs=300.0, lr=0.1, decay_epochs=(150, 225), weight_decay=1e-4)
    if options.smoke:
        recipe.apply_smoke(c, "resnet_cifar", depth=8, widths=(8, 16, 32))
    return recipe.finalise(c, options)
