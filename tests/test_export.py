"""`python -m saol_jax.commands.export`: an artefact that a bare jax process loads and runs like the model.

    nice -n 19 .venv/bin/python -m pytest -q tests/test_export.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from commands import run_command
from saol_jax import data
from saol_jax.core.restore import load_trained
from saol_jax.core.trainer import train_and_evaluate
from test_trainer import tiny_config

# Loads the artefact with only jax and numpy, runs it on the images twice (all of them and the
# first 7: the batch dimension is symbolic) and saves the outputs.
STANDALONE = """
import json, sys
import jax, numpy as np
info = json.load(open("model.json"))
exported = jax.export.deserialize(open(info["file"], "rb").read())
images = np.load("images.npy")
outputs = exported.call(images)
few = exported.call(images[:7])
assert "saol_jax" not in sys.modules, "the artefact must load without this repository"
np.savez("outputs.npz", **{k: np.asarray(v) for k, v in outputs.items()},
         **{"few_" + k: np.asarray(v) for k, v in few.items()})
"""


@pytest.fixture(scope="module")
def exported(tiny_dataset, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    train_and_evaluate(tiny_config(tiny_dataset, num_train_steps=2, eval_cutmix_maps=False), workdir)
    out = str(tmp_path_factory.mktemp("export"))
    proc = run_command("commands.export", ["--workdir", workdir, "--out", out], timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return workdir, out


def test_json_says_how_to_call_it(exported):
    _, out = exported
    with open(os.path.join(out, "model.json"), encoding="utf-8") as f:
        info = json.load(f)
    assert info["input"] == {**info["input"], "shape": [None, 12, 12, 3], "dtype": "uint8"}
    assert info["class_names"] == ["0", "1", "2", "3"]
    assert info["outputs"]["attention"]["shape"] == [None, 3, 3]
    assert {name: o["shape"] for name, o in info["outputs"].items() if name != "attention"} == {
        "saol_probs": [None, 4], "gap_probs": [None, 4]}
    assert info["platforms"] == ["cpu", "cuda", "tpu"]
    assert "jax.export.deserialize" in info["usage"] and os.path.exists(os.path.join(out, info["file"]))


def test_standalone_process_matches_the_restored_model(exported, tmp_path):
    workdir, out = exported
    trained = load_trained(workdir)
    batch = next(data.host_eval_batches(trained.config.dataset, global_batch_size=30))
    images = batch["image"][batch["mask"]]
    assert len(images) == 30
    np.save(os.path.join(out, "images.npy"), images)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", STANDALONE], cwd=out, env={**env, "JAX_PLATFORMS": "cpu"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(os.path.join(out, "outputs.npz"))
    want = trained.forward(images)
    expected = {
        "saol_probs": np.exp(want["log_probs"]),
        "gap_probs": jax.nn.softmax(want["gap_logits"], axis=-1),
        "attention": np.exp(want["log_attention"]),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, atol=1e-5, rtol=0, err_msg=name)
        np.testing.assert_allclose(got[f"few_{name}"], value[:7], atol=1e-5, rtol=0, err_msg=name)

