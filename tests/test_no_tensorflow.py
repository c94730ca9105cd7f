"""Training, resuming and evaluating (in training and with the evaluate command) with
dataset.backend='grain' while TensorFlow cannot be imported (the resumed run also compiles
from the persistent compilation cache the first one wrote)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
from commands import smoke_args, start_command
from test_trainer import final_params

# Hides tensorflow from every import finder, as if it were not installed (importlib.util.find_spec
# returns None, `import tensorflow` raises ModuleNotFoundError).
HIDE_TENSORFLOW = textwrap.dedent("""
    import sys

    class _WithoutTensorFlow:
        def __init__(self, finder):
            self._finder = finder

        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                return None
            find = getattr(self._finder, "find_spec", None)
            return find(name, path, target) if find else None

        def __getattr__(self, name):
            return getattr(self._finder, name)

    sys.meta_path[:] = [_WithoutTensorFlow(finder) for finder in sys.meta_path]
""")


def run(command: str, args: list[str], env: dict[str, str]) -> str:
    """Runs `python -m saol_jax.<command> ARGS` to the end; its output."""
    proc = start_command(command, args, **env)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def test_train_resume_and_evaluate_without_tensorflow(tiny_dataset, tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(HIDE_TENSORFLOW)
    env = {"PYTHONPATH": str(shim)}
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], env=dict(os.environ, **env),
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "No module named 'tensorflow'" in probe.stderr

    cache = tmp_path / "compiled"
    steps = ["--config.dataset.backend=grain", "--config.num_train_steps=4",
             "--config.checkpoint_every_steps=2", "--config.log_every_steps=2", f"--compilation_cache={cache}"]
    reference = str(tmp_path / "reference")
    out = run("train", smoke_args(tiny_dataset, reference, *steps), env)
    assert "eval at step 4" in out
    assert len(os.listdir(cache)) >= 2  # the train and eval steps; the resumed run below reads them

    resumed = str(tmp_path / "resumed")
    shutil.copytree(reference, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "4"))  # as if killed between steps 2 and 4
    assert "resumed from checkpoint at step 2" in run("train", smoke_args(tiny_dataset, resumed, *steps), env)
    want, got = final_params(reference, tiny_dataset), final_params(resumed, tiny_dataset)
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=str(name))
    assert "wrote" in run("commands.evaluate", ["--workdir", reference], env)
    assert os.path.exists(os.path.join(reference, "evaluate_test_step4.json"))
