"""CIFAR-100 (or CIFAR-10) PyramidNet-200 alpha=240 with SAOL: the CutMix paper's recipe.

Command:
  python -m saol_jax.train --config configs/cifar_pyramidnet200.py --workdir workdirs/pyr200_c100
  ... :dataset=cifar10   ... :shakedrop   ... :head=gap (GAP-FC + CutMix baseline)

Recipe (docs/method.md §9): 300 epochs, batch 64, SGD Nesterov momentum 0.9, lr 0.25,
x0.1 at epochs 150 and 225, weight decay 1e-4, pad-4 crop + flip, CutMix
beta=1 p=0.5. Optional ShakeDrop (linear schedule to 0.5).
Sized for: one GPU (batch 64, 26.8M parameters); `hw=gpu8` for an 8-GPU host
(batch 512, lr scaled linearly).
Time: not measured by this project (it had no GPU).
Expected top-1 error on CIFAR-100 (published by the CutMix paper, GAP-FC head):
16.45 without CutMix, 14.23 with CutMix, 13.81 with CutMix + ShakeDrop, noise
about +-0.2; this project has not reproduced them (no run in results/).
Options: dataset=cifar100|cifar10, shakedrop (bool), head=gap|gap_ms|saol|saol_ss|saol_ss_sd, hw=..., smoke.
"""

import ml_collections

from saol_jax.core import recipe
from saol_jax.core.options import Option


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = recipe.recipe_options(arg, dataset=recipe.CIFAR_DATASET, shakedrop=Option(False))
    c = recipe.cifar_base(options.dataset)
    c.model.backbone = "pyramidnet200_a240"
    c.model.backbone_kwargs.shakedrop = 0.5 if options.shakedrop else 0.0
    c.batch_size = 64
    recipe.sgd_schedule(c, num_epochs=300.0, lr=0.25, decay_epochs=(150, 225), weight_decay=1e-4)
    if options.smoke:
        recipe.apply_smoke(c, "pyramidnet", depth=8, alpha=12, bottleneck=False,
                           shakedrop=c.model.backbone_kwargs.shakedrop)
    return recipe.finalise(c, options)
