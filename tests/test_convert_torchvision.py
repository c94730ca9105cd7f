"""torchvision ResNet weights -> this project's ResNet v1.5: same logits, a checkpoint init_from reads."""

from __future__ import annotations

import json
import os
import struct

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from saol_jax.commands import convert_torchvision as ct
from saol_jax.core import checkpoint
from test_trainer import flat_arrays
from torch_resnet_reference import random_resnet


@pytest.fixture(scope="module")
def resnet18():
    return random_resnet("resnet18", num_classes=1000, seed=1)


def _logits(arch: str, torch_model: torch.nn.Module, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    params, batch_stats = ct.convert(torch_model.state_dict(), arch)
    model = ct.build(arch, num_classes=torch_model.fc.out_features)
    ct.load_into(model, params, batch_stats)
    model.eval()
    ours = np.asarray(model(jax.numpy.asarray(images.transpose(0, 2, 3, 1)))["gap_logits"])
    with torch.no_grad():
        theirs = torch_model(torch.from_numpy(images)).numpy()
    return ours, theirs


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_converted_model_gives_torchvision_logits(arch):
    torch_model = random_resnet(arch, num_classes=1000, seed=0)
    images = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    ours, theirs = _logits(arch, torch_model, images)
    assert ours.shape == theirs.shape == (3, 1000)
    assert np.abs(theirs).max() > 0.1  # not a degenerate comparison
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_layout_of_converted_arrays(resnet18):
    state = resnet18.state_dict()
    params, batch_stats = ct.convert(state, "resnet18")
    np.testing.assert_array_equal(params["backbone"]["stem_conv"]["kernel"],
                                  state["conv1.weight"].numpy().transpose(2, 3, 1, 0))
    shortcut = params["backbone"]["stages"]["1"]["0"]["shortcut"]
    assert shortcut["conv"]["kernel"].shape == (1, 1, 64, 128)
    np.testing.assert_array_equal(batch_stats["backbone"]["stages"]["1"]["0"]["shortcut"]["bn"]["var"],
                                  state["layer2.0.downsample.1.running_var"].numpy())
    np.testing.assert_array_equal(params["gap_fc"]["fc"]["kernel"], state["fc.weight"].numpy().T)


def test_wrong_arch_is_named(resnet18):
    with pytest.raises(ct.ConversionError, match="pass --arch resnet18"):
        ct.convert(resnet18.state_dict(), "resnet34")
    assert ct.infer_arch(resnet18.state_dict()) == "resnet18"


def _write_safetensors(path: str, tensors: dict[str, np.ndarray]) -> None:
    """A minimal .safetensors writer (float32 tensors only): 8-byte header size, JSON header, data."""
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def test_command_writes_a_checkpoint_init_from_reads(resnet18, tmp_path, capsys):
    weights = str(tmp_path / "resnet18.pth")
    torch.save({f"module.{k}": v for k, v in resnet18.state_dict().items()}, weights)  # DataParallel prefixes
    out = str(tmp_path / "converted")
    ct.main(["--weights", weights, "--arch", "resnet18", "--out", out])
    assert "--config.init_from=" in capsys.readouterr().out
    assert os.path.isdir(os.path.join(out, "checkpoints", "0"))
    model = ct.build("resnet18", 1000, seed=5)
    params, batch_stats = checkpoint.load_weights(
        os.path.join(out, "checkpoints"), nnx.state(model, nnx.Param), nnx.state(model, nnx.BatchStat))
    expected_params, expected_stats = ct.convert(resnet18.state_dict(), "resnet18")
    for got, expected in ((params, expected_params), (batch_stats, expected_stats)):
        got, expected = flat_arrays(got), ct._flatten(expected)
        assert got.keys() == expected.keys()
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])

    # The same weights as .safetensors, and --num_classes other than fc's: the backbone only.
    safetensors = str(tmp_path / "resnet18.safetensors")
    _write_safetensors(safetensors, {k: v.numpy() for k, v in resnet18.state_dict().items()
                                     if not k.endswith("num_batches_tracked")})
    out2 = str(tmp_path / "backbone_only")
    ct.main(["--weights", safetensors, "--arch", "resnet18", "--out", out2, "--num_classes", "200"])
    raw = checkpoint.Checkpointer(os.path.join(out2, "checkpoints"), async_save=False)
    try:
        stored = raw.restore_raw(0)
    finally:
        raw.close()
    assert set(stored["params"]) == {"backbone"}
    got = flat_arrays(stored["params"])
    for key, value in ct._flatten(expected_params).items():
        if key[0] == "backbone":
            np.testing.assert_array_equal(got[key], value)

    with pytest.raises(SystemExit, match="already holds a checkpoint"):
        ct.main(["--weights", weights, "--arch", "resnet18", "--out", out])
