"""The accelerator check: its parts in their tiny settings, with and without TensorFlow installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from benchmarks import accelerator, carried, end_to_end, input_pipeline, memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TF_FREE_MODULES = ("saol_jax.models", "saol_jax.core.losses", "saol_jax.core.cutmix", "saol_jax.core.train_step",
                   "saol_jax.core.optim", "saol_jax.core.sharding", "benchmarks.step_time", "benchmarks.grad_accum",
                   "benchmarks.memory",
                   "benchmarks.end_to_end", "benchmarks.accelerator")
# As on the accelerator hosts: these cannot be imported (a None entry in sys.modules makes
# `import` fail and `importlib.util.find_spec` report the module as missing).
BLOCKED = ("tensorflow", "tensorflow_datasets", "ml_collections")
BLOCKER = f"import sys\nfor _name in {BLOCKED!r}:\n    sys.modules[_name] = None\n"


def read(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def without_tensorflow_env(tmp_path) -> dict[str, str]:
    """An environment whose Python processes cannot import BLOCKED (a sitecustomize on PYTHONPATH)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}", "PYTHON": sys.executable}


def test_core_imports_without_tensorflow(tmp_path):
    code = (f"{BLOCKER}import importlib\n"
            f"for name in {TF_FREE_MODULES!r}:\n    importlib.import_module(name)\n"
            "loaded = [m for m, v in sys.modules.items() if v is not None]\n"
            "assert not [m for m in loaded if m.startswith(('tensorflow', 'ml_collections'))]\n"
            "import tensorflow\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    # Every module imported; only the final, deliberate `import tensorflow` failed.
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("ModuleNotFoundError: import of tensorflow halted")


def test_memory_tiny(tmp_path):
    out = tmp_path / "memory.json"
    payload = memory.main(["--tiny", "--out", str(out)])
    (result,) = payload["settings"].values()
    gap, saol = result["rungs"]["gap"], result["rungs"]["saol_ss_sd"]
    # The SAOL model carries the head's parameters and their momentum on top of GAP-FC's.
    assert saol["argument_size_in_bytes"] > gap["argument_size_in_bytes"]
    for rung in (gap, saol):
        assert rung["footprint_bytes"] == (rung["argument_size_in_bytes"] + rung["output_size_in_bytes"]
                                           - rung["alias_size_in_bytes"] + rung["temp_size_in_bytes"])
        assert rung["alias_size_in_bytes"] > 0  # the state is donated
    assert result["saol_over_gap_footprint"] == saol["footprint_bytes"] / gap["footprint_bytes"]
    assert read(out)["settings"]["tiny"]["rungs"] == result["rungs"]


def test_memory_settings_expand_groups():
    assert list(memory.parse_settings("resnet50_bf16,cifar")) == [
        "resnet50_bf16", "resnet110", "wrn28_10", "pyramidnet200_a240"]
    with pytest.raises(ValueError, match="unknown setting"):
        memory.parse_settings("resnet51")


def test_input_pipeline_tiny(tmp_path):
    out = tmp_path / "input_pipeline.json"
    result = input_pipeline.main(["--tiny", "--stages", "--out", str(out)])
    assert [(r["backend"], r["transform"], r["threads"]) for r in result["rows"]] == [
        ("tfdata", name, 1) for name in (*input_pipeline.TRANSFORMS, *input_pipeline.STAGES)] + [
        ("grain", name, 1) for name in input_pipeline.GRAIN]
    assert all(r["images"] > 0 and r["img_per_s"] > 0 for r in result["rows"])
    fused, plain = (r["img_per_s"] for r in result["rows"][:2])
    assert result["fused_over_plain"]["1"] == pytest.approx(fused / plain)
    assert len(result["goals"]) == 2  # tf.data's fused and grain's train transform
    for goal in result["goals"].values():
        assert goal["met"] == (goal["measured"] >= input_pipeline.TRAIN_PER_CORE_GOAL)
    assert read(out)["rows"] == result["rows"]


def test_end_to_end_tiny(tmp_path, tiny_dataset):
    result = end_to_end.main(["--tiny", "--dataset", tiny_dataset["name"], "--data_dir",
                              tiny_dataset["data_dir"], "--out", str(tmp_path / "e2e.json")])
    assert result["wall_s"] > 0
    assert 0.0 <= result["eval"]["eval/saol_top1"] <= 1.0
    assert result["eval"]["eval/count"] == 30


def test_end_to_end_tiny_grain_times_the_first_evaluation(tmp_path, tiny_dataset):
    result = end_to_end.main(["--tiny", "--backend", "grain", "--dataset", tiny_dataset["name"], "--data_dir",
                              tiny_dataset["data_dir"], "--out", str(tmp_path / "e2e.json")])
    assert result["backend"] == "grain" and result["eval"]["eval/count"] == 30
    assert 0 < result["first_eval_s"] <= result["wall_s"]


def test_carried_wheels_unpack_only_what_is_missing(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("numpy", "saol_carried_probe"):
        with zipfile.ZipFile(wheels / f"{name}-1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"{name}/__init__.py", "VALUE = 1\n")
    site = tmp_path / "site"
    assert carried.unpack_missing(str(wheels), str(site)) == ["saol_carried_probe"]  # numpy is installed
    assert (site / "saol_carried_probe" / "__init__.py").exists() and not (site / "numpy").exists()


def test_end_to_end_missing_dataset_is_skipped(tmp_path):
    result = end_to_end.main(["--tiny", "--data_dir", str(tmp_path / "nowhere"),
                              "--out", str(tmp_path / "e2e.json")])
    assert result["skipped"].startswith("dataset not prepared")


@pytest.mark.parametrize("item, expected", [
    ("memory=0:81", {"status": "ok", "seconds": 81.0}),
    ("step_time=124:170", {"status": "timed out", "seconds": 170.0}),
    ("step_time=1:3", {"status": "failed (exit 1)", "seconds": 3.0}),
    ("end_to_end=skipped:no tensorflow", {"status": "skipped:no tensorflow", "seconds": 0.0}),
])
def test_accelerator_status(item, expected):
    assert accelerator.parse_status(item) == (item.split("=")[0], expected)


def test_accelerator_script_tiny_without_tensorflow(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "accelerator.sh"), "--tiny", str(out)],
                          cwd=tmp_path, env=without_tensorflow_env(tmp_path), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "== input_pipeline: skipped: tensorflow" in proc.stdout
    assert "== end_to_end: skipped: tensorflow" in proc.stdout
    summary = read(out / "accelerator.json")["parts"]
    assert summary["step_time"]["status"] == "ok" and summary["memory"]["status"] == "ok"
    assert summary["step_time"]["result"]["variants"].keys() == {"gap", "saol_ss_sd"}
    # torch_peer runs where torch and torchvision import; it is skipped (and says so) or it ran.
    assert summary["torch_peer"]["status"] in ("ok", "skipped:torch / torchvision not importable")
    assert summary["input_pipeline"]["result"] is None
    assert "| step_time | ok |" in (out / "accelerator.md").read_text()
    assert len(os.listdir(out)) <= 8


def test_accelerator_summary_compares_jax_with_the_fastest_pytorch_mode(tmp_path):
    step = {"workload": {"backbone": "resnet50", "image_size": 224, "dtype": "bfloat16", "batch": 256},
            "devices": 1, "device_kind": "H200", "saol_over_gap_throughput": 0.8,
            "variants": {"gap": {"img_per_s_median": 600.0},
                         "saol_ss_sd": {"ss2_form": "paste", "img_per_s_median": 480.0},
                         "saol_ss_sd@paste_self": {"ss2_form": "paste_self", "img_per_s_median": 570.0}}}
    peer = {"workload": {"arch": "resnet50", "image_size": 224, "dtype": "bfloat16", "batch": 256},
            "torch": "2.11", "variants": {"eager": {"img_per_s_median": 400.0},
                                          "compile": {"img_per_s_median": 640.0}}}
    for name, payload in (("step_time", step), ("torch_peer", peer)):
        (tmp_path / f"{name}.json").write_text(json.dumps(payload))
    accelerator.summarise(str(tmp_path), {})
    md = (tmp_path / "accelerator.md").read_text()
    assert "| JAX GAP-FC / PyTorch compile GAP-FC | 0.938 |" in md
    assert "| JAX SAOL+SS+SD (paste) / PyTorch compile GAP-FC | 0.750 |" in md
    assert "SAOL+SS+SD (paste_self) img/s (/ GAP-FC) | 570.0 (0.950) |" in md
    assert "PyTorch eager GAP-FC img/s" in md
