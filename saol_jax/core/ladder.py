"""The ablation ladder: GAP-FC, SAOL, SAOL + SS, SAOL + SS + SD (docs/method.md §8), and its controls.

Each rung is a model head and the weights of the loss terms (docs/method.md §7);
recipes select one with `:head=RUNG`, `saol_jax.studies.ablate` trains them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the ladder itself is imported where ml_collections is not installed
    import ml_collections

_GAP_LOSS = {"saol": 0.0, "ss1": 0.0, "ss2": 0.0, "sd": 0.0, "gap": 1.0}

# Loss weights (saol, ss1, ss2, sd, gap) per rung.
HEAD_LADDER: dict[str, dict[str, float]] = {
    # GAP-FC + CutMix: the baseline.
    "gap": dict(_GAP_LOSS),
    # Control: GAP-FC + CutMix on the SAOL head's fused multi-scale features (no attention), so
    # that SAOL's lead over `gap` can be split into the extra stages and the attention.
    "gap_ms": dict(_GAP_LOSS),
    # SAOL trained by its own mixed-label CE; the GAP-FC branch is left untrained.
    "saol": {"saol": 1.0, "ss1": 0.0, "ss2": 0.0, "sd": 0.0, "gap": 0.0},
    # + location-specific self-supervision (SS-1, SS-2).
    "saol_ss": {"saol": 1.0, "ss1": 1.0, "ss2": 1.0, "sd": 0.0, "gap": 0.0},
    # + self-distillation into the GAP-FC branch, which also gets its own CE.
    "saol_ss_sd": {"saol": 1.0, "ss1": 1.0, "ss2": 1.0, "sd": 1.0, "gap": 1.0},
}

# `config.model.head` of each rung (saol_jax.models.HEADS).
MODEL_HEADS: dict[str, str] = {"gap": "gap", "gap_ms": "gap_ms", "saol": "saol", "saol_ss": "saol",
                               "saol_ss_sd": "saol"}

# The recipes' base `config.loss` (saol_jax.core.recipe.base_config): the full ladder's weights and the
# SS-2 form (saol_jax.core.losses.SS2_FORMS). It lives in this module, which needs no ml_collections, so that
# tools which build a train step without a recipe (benchmarks) run the same values; nothing below
# the config has a default of its own. The SS-2 form is the one the target-benchmark study (README,
# "The study") chose on its validation split; docs/method.md §5.2 says how and what the others give.
# `paste_clean_fraction` and `paste_clean_scale` (saol_jax.core.paste_targets) make `paste`'s extra
# forward pass cheaper; 1 and 1 run the full pass.
BASE_LOSS: dict[str, float | str] = {**HEAD_LADDER["saol_ss_sd"], "ss2_form": "renorm",
                                     "paste_clean_fraction": 1.0, "paste_clean_scale": 1}

# Rung suffixes (`RUNG@variant`) that select a cheaper `paste` target, as the `config.loss` fields
# they set; any other suffix is an SS-2 form (saol_jax.core.losses.SS2_FORMS).
PASTE_VARIANTS: dict[str, dict[str, float | str]] = {
    # Every target from the mixed image's own forward: no extra pass.
    "paste_self": {"ss2_form": "paste", "paste_clean_fraction": 0.0},
    # The un-mixed pass on a quarter of the examples and their partners (half the rows).
    "paste_quarter": {"ss2_form": "paste", "paste_clean_fraction": 0.25},
    # The un-mixed pass at half the resolution (a quarter of the pixels).
    "paste_halfres": {"ss2_form": "paste", "paste_clean_scale": 2},
}


def apply_head(config: ml_collections.ConfigDict, head: str) -> None:
    """Sets `config.model.head` and `config.loss` to the rung `head`."""
    if head not in HEAD_LADDER:
        raise ValueError(f"head must be one of {', '.join(HEAD_LADDER)}, got {head!r}")
    config.model.head = MODEL_HEADS[head]
    config.loss.update(HEAD_LADDER[head])  # other loss fields (ss2_form) are kept


def rung_loss(form: str) -> dict[str, float | str]:
    """The `config.loss` fields a rung's `@form` sets: a PASTE_VARIANTS entry, else `ss2_form=form`."""
    return dict(PASTE_VARIANTS.get(form, {"ss2_form": form}))


def split_rung(rung: str) -> tuple[str, str | None]:
    """'saol_ss@paste' -> ('saol_ss', 'paste'): a ladder head and an SS-2 form; 'gap' -> ('gap', None)."""
    head, _, form = rung.partition("@")
    return head, form or None
