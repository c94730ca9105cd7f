"""saol_jax: Spatially Attentive Output Layer (Kim, Baek, Kim; CVPR 2020) in JAX and Flax NNX.

The library is `models`, `data` and `core`; the command lines are in `commands`, the studies over
many runs in `studies` (README, "Code map").
"""

__version__ = "0.1.0"
