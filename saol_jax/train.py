"""`python -m saol_jax.train --config configs/<recipe>.py[:options] --workdir DIR`: the documented
spelling of the train command (saol_jax.commands.train)."""

from saol_jax.commands.train import run

if __name__ == "__main__":
    run()
