"""saol_jax: Spatially Attentive Output Layer (Kim, Baek, Kim; CVPR 2020) in JAX and Flax NNX."""

__version__ = "0.1.0"
