"""The ablation ladder: GAP-FC, SAOL, SAOL + SS, SAOL + SS + SD (docs/method.md §8).

Each rung is a head and the weights of the loss terms (docs/method.md §7);
recipes select one with `:head=RUNG`, `saol_jax.ablate` trains them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the ladder itself is imported where ml_collections is not installed
    import ml_collections

# Loss weights (saol, ss1, ss2, sd, gap) per rung.
HEAD_LADDER: dict[str, dict[str, float]] = {
    # GAP-FC + CutMix: the baseline.
    "gap": {"saol": 0.0, "ss1": 0.0, "ss2": 0.0, "sd": 0.0, "gap": 1.0},
    # SAOL trained by its own mixed-label CE; the GAP-FC branch is left untrained.
    "saol": {"saol": 1.0, "ss1": 0.0, "ss2": 0.0, "sd": 0.0, "gap": 0.0},
    # + location-specific self-supervision (SS-1, SS-2).
    "saol_ss": {"saol": 1.0, "ss1": 1.0, "ss2": 1.0, "sd": 0.0, "gap": 0.0},
    # + self-distillation into the GAP-FC branch, which also gets its own CE.
    "saol_ss_sd": {"saol": 1.0, "ss1": 1.0, "ss2": 1.0, "sd": 1.0, "gap": 1.0},
}


def apply_head(config: ml_collections.ConfigDict, head: str) -> None:
    """Sets `config.model.head` and `config.loss` to the rung `head`."""
    if head not in HEAD_LADDER:
        raise ValueError(f"head must be one of {', '.join(HEAD_LADDER)}, got {head!r}")
    config.model.head = "gap" if head == "gap" else "saol"
    config.loss.update(HEAD_LADDER[head])  # other loss fields (ss2_form) are kept


def split_rung(rung: str) -> tuple[str, str | None]:
    """'saol_ss@paste' -> ('saol_ss', 'paste'): a ladder head and an SS-2 form; 'gap' -> ('gap', None)."""
    head, _, form = rung.partition("@")
    return head, form or None
