"""Re-exports for code that imports the ladder from here; recipes build on `saol_jax.recipe`."""

from saol_jax.ladder import HEAD_LADDER, apply_head

__all__ = ["HEAD_LADDER", "apply_head"]
