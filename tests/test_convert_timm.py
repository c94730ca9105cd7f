"""timm ViT / ConvNeXt weights -> this project's models: same logits and features on tiny
configurations of a PyTorch reference with timm's module names, and a checkpoint init_from reads."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from flax import nnx

from saol_jax.core import checkpoint
from saol_jax.commands import convert_timm as ctimm
from saol_jax.commands.convert_torchvision import ConversionError, load_into
from saol_jax.models import build_model
from test_trainer import flat_arrays
from torch_timm_reference import ConvNeXt, VisionTransformer, randomise

# Tiny networks with the real layouts: (our backbone name, its kwargs, the reference).
TINY = {
    "vit": ("vit", {"patch_size": 4, "embed_dim": 24, "depth": 2, "num_heads": 3, "img_size": 16, "pool": "token"},
            lambda: VisionTransformer(24, 2, 3, patch=4, img_size=16, num_classes=7)),
    "convnext": ("convnext", {"depths": (1, 2), "dims": (8, 16)},
                 lambda: ConvNeXt((1, 2), (8, 16), num_classes=7)),
}


def _ours(backbone: str, kwargs: dict, num_classes: int = 7):
    config = ml_collections.ConfigDict({
        "backbone": backbone, "backbone_kwargs": kwargs, "head": "gap", "saol": {},
        "dtype": "float32", "ghost_bn_size": 0,
    })
    return build_model(config, num_classes=num_classes, in_channels=3, rngs=nnx.Rngs(3))


@pytest.mark.parametrize("family", sorted(TINY))
def test_converted_model_gives_the_references_logits_and_features(family):
    backbone, kwargs, make_reference = TINY[family]
    reference = randomise(make_reference(), seed=0)
    params, batch_stats = ctimm.convert(reference.state_dict())
    assert batch_stats == {}
    model = _ours(backbone, kwargs)
    load_into(model, params, batch_stats)
    model.eval()
    images = np.random.default_rng(0).normal(size=(3, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(images)).numpy()
        their_features = reference.forward_features(torch.from_numpy(images)).numpy()
    x = jnp.asarray(images.transpose(0, 2, 3, 1))
    ours = np.asarray(model(x)["gap_logits"])
    assert ours.shape == theirs.shape == (3, 7)
    assert np.abs(theirs).std() > 0.1  # not a degenerate comparison
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    last = np.asarray(model.backbone(x)[-1])
    if family == "vit":  # the final-LN patch tokens, row-major over the 4x4 grid
        their_grid = their_features[:, 1:].reshape(3, 4, 4, 24)
    else:  # the last stage's NCHW map
        their_grid = their_features.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(last, their_grid, rtol=1e-4, atol=1e-4)


def test_vit_mean_pool_reads_the_same_weights():
    backbone, kwargs, make_reference = TINY["vit"]
    reference = randomise(make_reference(), seed=1)
    params, batch_stats = ctimm.convert(reference.state_dict())
    model = _ours(backbone, {**kwargs, "pool": "avg"})
    load_into(model, params, batch_stats)
    model.eval()
    images = np.random.default_rng(1).normal(size=(2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        tokens = reference.forward_features(torch.from_numpy(images))
        expected = reference.head(tokens[:, 1:].mean(1)).numpy()
    ours = np.asarray(model(jnp.asarray(images.transpose(0, 2, 3, 1)))["gap_logits"])
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_layout_and_head_handling():
    reference = randomise(TINY["convnext"][2](), seed=2)
    state = reference.state_dict()
    params, _ = ctimm.convert(state)
    block = params["backbone"]["stages"]["1"]["blocks"]["0"]
    np.testing.assert_array_equal(block["conv_dw"]["kernel"],
                                  state["stages.1.blocks.0.conv_dw.weight"].numpy().transpose(2, 3, 1, 0))
    assert block["conv_dw"]["kernel"].shape == (7, 7, 1, 16)
    np.testing.assert_array_equal(block["gamma"], state["stages.1.blocks.0.gamma"].numpy())
    np.testing.assert_array_equal(params["backbone"]["stages"]["1"]["downsample"]["norm"]["scale"],
                                  state["stages.1.downsample.0.weight"].numpy())
    np.testing.assert_array_equal(params["backbone"]["head_norm"]["bias"], state["head.norm.bias"].numpy())
    np.testing.assert_array_equal(params["gap_fc"]["fc"]["kernel"], state["head.fc.weight"].numpy().T)
    assert "gap_fc" not in ctimm.convert(state, include_head=False)[0]
    # A ViT with another width does not load into the tiny one: the shapes are named.
    other = VisionTransformer(16, 2, 2, patch=4, img_size=16, num_classes=7)
    wrong, _ = ctimm.convert(other.state_dict())
    with pytest.raises(ConversionError, match="converted shape"):
        load_into(_ours(*TINY["vit"][:2]), wrong, {})
    with pytest.raises(ConversionError, match="fc_norm"):
        ctimm.convert({"fc_norm.weight": np.ones(3), **other.state_dict()})


def test_named_sizes_are_recognised():
    for arch in ("vit_tiny_patch16", "convnext_tiny"):
        reference = VisionTransformer(192, 12, 3) if arch.startswith("vit") else ConvNeXt((3, 3, 9, 3),
                                                                                         (96, 192, 384, 768))
        assert ctimm.infer_arch(reference.state_dict()) == arch


def test_command_writes_a_checkpoint_init_from_reads(tmp_path, capsys):
    # vit_tiny_patch16 at 224 with random weights: the smallest named size the command converts.
    reference = randomise(VisionTransformer(192, 12, 3, num_classes=10), seed=4)
    weights = str(tmp_path / "vit_tiny.pth")
    torch.save(reference.state_dict(), weights)
    out = str(tmp_path / "converted")
    ctimm.main(["--weights", weights, "--arch", "vit_tiny_patch16", "--out", out, "--num_classes", "0"])
    assert "--config.init_from=" in capsys.readouterr().out
    # init_from into a SAOL model with another class count: the backbone loads, the heads stay fresh.
    config = ml_collections.ConfigDict({
        "backbone": "vit_tiny_patch16", "backbone_kwargs": {}, "head": "saol", "dtype": "float32",
        "ghost_bn_size": 0, "saol": {"num_stages": 2, "att_kernel": 1, "att_width": 8, "mid_width": 8, "attention_floor": 0.0},
    })
    model = build_model(config, num_classes=3, in_channels=3, rngs=nnx.Rngs(0))
    params, _ = checkpoint.load_weights(os.path.join(out, "checkpoints"), nnx.state(model, nnx.Param),
                                        nnx.state(model, nnx.BatchStat), init_heads=True)
    got = flat_arrays(params)
    np.testing.assert_array_equal(got[("backbone", "pos_embed")], reference.pos_embed.detach().numpy())
    np.testing.assert_array_equal(got[("backbone", "blocks", "11", "attn", "qkv", "kernel")],
                                  reference.blocks[11].attn.qkv.weight.detach().numpy().T)
    with pytest.raises(SystemExit, match="is a vit, the weights a convnext"):
        torch.save(ConvNeXt((1, 1), (8, 16)).state_dict(), str(tmp_path / "c.pth"))
        ctimm.main(["--weights", str(tmp_path / "c.pth"), "--arch", "vit_tiny_patch16", "--out", str(tmp_path / "x")])


def test_against_timm_itself_where_installed():
    """Runs only where timm is installed (the GPU image); the reference tests above stand in elsewhere."""
    pytest.importorskip("timm")
    assert ctimm.check_against_timm("vit_tiny_patch16_224") < 1e-3
    assert ctimm.check_against_timm("convnext_tiny") < 1e-3


def test_check_timm_writes_each_difference_and_the_versions(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ctimm, "check_against_timm", lambda name: {"vit_tiny_patch16_224": 2e-6}.get(name, 3e-5))
    out = tmp_path / "checks" / "timm_check.json"
    ctimm.main(["--check_timm", "vit_tiny_patch16_224,convnext_tiny", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "vit_tiny_patch16_224: largest |logit difference| ours vs timm = 2e-06" in printed
    assert "convnext_tiny: largest |logit difference| ours vs timm = 3e-05" in printed
    payload = json.loads(out.read_text())
    assert payload["max_abs_logit_difference"] == {"vit_tiny_patch16_224": 2e-6, "convnext_tiny": 3e-5}
    assert payload["versions"]["jax"] == jax.__version__


def test_check_timm_without_timm_says_so(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError("No module named 'timm'")

    monkeypatch.setattr(ctimm, "check_against_timm", missing)
    with pytest.raises(SystemExit, match="--check_timm needs timm and torch"):
        ctimm.main(["--check_timm", "convnext_tiny"])
