"""benchmarks.torch_peer: its argument parsing and a tiny eager run on CPU (where torch is importable).

The peer builds torchvision's networks. Where torchvision cannot be imported (this project's CPU
test environment has torch only), the tiny run gets `tests/torch_resnet_reference.py`'s ResNet, laid
out as torchvision's, in its place: the step code (channels-last, autocast, SGD, timing) is the same.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import pytest

torch = pytest.importorskip("torch", reason="torch is not importable: install requirements-dev.txt")
from benchmarks import torch_peer  # noqa: E402


def test_parse_args_defaults_and_errors(capsys):
    args = torch_peer.parse_args([])
    assert (args.arch, args.batch, args.image_size, args.num_classes, args.dtype) == (
        "resnet50", 256, 224, 1000, "bfloat16")
    assert args.modes == ("eager", "compile")
    assert torch_peer.parse_args(["--modes", "compile", "--dtype", "float32"]).modes == ("compile",)
    for bad in (["--modes", "eager,jit"], ["--batch", "0"], ["--dtype", "float16"]):
        with pytest.raises(SystemExit):
            torch_peer.parse_args(bad)
    err = capsys.readouterr().err
    assert "--modes must name some of eager,compile" in err and "--batch must be at least 1" in err


@pytest.fixture
def torchvision_models(monkeypatch):
    """torchvision where importable, else the reference ResNet in its place (see the module docstring)."""
    if importlib.util.find_spec("torchvision") is not None:
        try:
            import torchvision  # noqa: F401

            return "torchvision"
        except (ImportError, RuntimeError):
            pass
    from torch_resnet_reference import ResNet

    models = types.SimpleNamespace(resnet18=lambda num_classes: ResNet("resnet18", num_classes))
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=models))
    return "reference"


def test_tiny_eager_run_writes_its_json(tmp_path, torchvision_models, capsys):
    out = tmp_path / "torch_peer.json"
    result = torch_peer.main(["--tiny", "--device", "cpu", "--modes", "eager", "--reps", "2", "--steps", "1",
                              "--warmup", "1", "--out", str(out)])
    with open(out, encoding="utf-8") as f:
        assert json.load(f)["variants"].keys() == {"eager"} == result["variants"].keys()
    eager = result["variants"]["eager"]
    assert len(eager["samples_img_per_s"]) == 2
    assert 0 < eager["img_per_s_min"] <= eager["img_per_s_median"] <= eager["img_per_s_max"]
    assert result["workload"]["arch"] == "resnet18" and result["device"] == "cpu"
    assert "| eager |" in capsys.readouterr().out


def test_train_step_learns_the_fixed_batch(torchvision_models):
    # The step really trains: on its one fixed batch the loss falls.
    step = torch_peer.make_step(torch_peer.TINY, torch.device("cpu"), "eager")
    losses = [float(step()) for _ in range(8)]
    assert losses[-1] < losses[0]
