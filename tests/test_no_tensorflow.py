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
import tensorflow_datasets as tfds
from commands import REPO, smoke_args, start_command
from test_cluttered_fashion_mnist import fake_items, write_idx
from test_trainer import final_params

from saol_jax.data.fashion_mnist import SPLIT_FILES
from saol_jax.data.grain_source import data_source

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


def test_prepare_writes_array_record_without_tensorflow(tmp_path):
    """`saol_jax.data.prepare` writes the offline datasets where tensorflow cannot be imported (PNG
    encoding by Pillow, ArrayRecord files), and random access reads Fashion-MNIST's pixels back."""
    source = tmp_path / "idx"
    source.mkdir()
    items = {}
    for seed, (split, (images_file, labels_file)) in enumerate(SPLIT_FILES.items()):
        items[split] = fake_items(200 if split == "train" else 100, seed)
        write_idx(str(source / images_file), items[split][0])
        write_idx(str(source / labels_file), items[split][1])
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(HIDE_TENSORFLOW)
    data_dir = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "saol_jax.data.prepare", f"--data_dir={data_dir}", f"--source_dir={source}",
         "--cluttered_train=8", "--cluttered_test=4", "--target_train=8", "--target_validation=4",
         "--target_test=4"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(shim)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "target_fashion_mnist ready" in proc.stdout
    written = {p.name.split(".")[1].split("-")[0] for p in data_dir.glob("*/*/*-*.*-*-of-*")}
    assert written == {"array_record"}, written  # no TFRecord: writing it needs tensorflow

    builder = tfds.builder("fashion_mnist", data_dir=str(data_dir))
    source_test = data_source(builder, "test")
    images, labels = items["test"]
    assert len(source_test) == len(images)
    want = sorted((image.tobytes(), int(label)) for image, label in zip(images, labels))
    assert sorted((e["image"][..., 0].tobytes(), int(e["label"])) for e in source_test) == want
    for name, size in (("cluttered_fashion_mnist", 4), ("target_fashion_mnist", 4)):
        assert len(data_source(tfds.builder_from_directory(
            str(next((data_dir / name).iterdir()))), "test")) == size
