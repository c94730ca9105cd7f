"""Fine-tuning with a new head: init_from loads the backbone, starts a head of another shape fresh;
the CUB recipe's smoke variant trains from a converted torchvision checkpoint."""

from __future__ import annotations

import importlib
import logging
import os

import numpy as np
import pytest
from flax import nnx

from saol_jax.commands import convert_torchvision as ct
from saol_jax.core import checkpoint, trainer
from saol_jax.models import build_model
from test_trainer import flat_arrays, tiny_config
from tfds_fixtures import write_tiny_dataset


@pytest.fixture(scope="module")
def source_run(tiny_dataset, tmp_path_factory) -> str:
    """A 2-step run on the 4-class tiny dataset."""
    workdir = str(tmp_path_factory.mktemp("source"))
    trainer.train_and_evaluate(tiny_config(tiny_dataset, num_train_steps=2), workdir)
    return workdir


@pytest.fixture(scope="module")
def six_classes(tmp_path_factory) -> dict:
    data_dir = str(tmp_path_factory.mktemp("tfds6"))
    write_tiny_dataset(data_dir, name="tiny_shapes6", num_classes=6)
    return {"name": "tiny_shapes6", "data_dir": data_dir}


def _initialised_run(config, workdir: str) -> dict[str, dict[tuple[str, ...], np.ndarray]]:
    """Params and BN statistics of a run right after `_restore_or_initialise` (nothing trained)."""
    run = trainer._Run(trainer._with_resolved_paths(config), workdir)
    try:
        run._restore_or_initialise()
        return {"params": flat_arrays(run.state.params), "batch_stats": flat_arrays(run.state.batch_stats)}
    finally:
        run.close()


def test_init_from_another_class_count_loads_the_backbone_only(source_run, six_classes, tmp_path, caplog):
    config = tiny_config(six_classes, init_from=source_run)
    with caplog.at_level(logging.INFO, logger="saol_jax.core.checkpoint"):
        state = _initialised_run(config, str(tmp_path))
    fresh_model = build_model(config.model, num_classes=6, in_channels=3, rngs=nnx.Rngs(config.seed))
    fresh = {"params": flat_arrays(nnx.state(fresh_model, nnx.Param)),
             "batch_stats": flat_arrays(nnx.state(fresh_model, nnx.BatchStat))}
    source = checkpoint.Checkpointer(os.path.join(source_run, "checkpoints"), async_save=False)
    try:
        raw = source.restore_raw(source.steps()[-1])
    finally:
        source.close()
    counts = {"backbone": 0, "head": 0}
    for collection in ("params", "batch_stats"):
        trained = flat_arrays(raw[collection])
        for key, value in state[collection].items():
            if key[0] == "backbone":
                np.testing.assert_array_equal(value, trained[key], err_msg="/".join(key))
                counts["backbone"] += 1
            else:
                assert key[0] in ("gap_fc", "saol")
                np.testing.assert_array_equal(value, fresh[collection][key], err_msg="/".join(key))
                counts["head"] += 1
    assert state["params"][("gap_fc", "fc", "kernel")].shape[-1] == 6
    # The backbone was trained for 2 steps, so "loaded" and "initialised" differ there.
    assert not np.array_equal(state["params"][("backbone", "stem_conv", "kernel")],
                              fresh["params"][("backbone", "stem_conv", "kernel")])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("init_from")]
    assert len(lines) == 1, lines
    assert f"loaded {counts['backbone']} arrays (backbone); initialised {counts['head']} arrays (gap_fc:" in lines[0]
    assert "saol:" in lines[0] and "has shape" in lines[0]


def test_init_from_same_classes_loads_the_heads_too(source_run, tiny_dataset, tmp_path, caplog):
    config = tiny_config(tiny_dataset, init_from=source_run)
    with caplog.at_level(logging.INFO, logger="saol_jax.core.checkpoint"):
        state = _initialised_run(config, str(tmp_path))
    assert "initialised 0 arrays (none)" in caplog.text
    assert "(backbone, gap_fc, saol)" in caplog.text
    source = checkpoint.Checkpointer(os.path.join(source_run, "checkpoints"), async_save=False)
    try:
        trained = flat_arrays(source.restore_raw(source.steps()[-1])["params"])
    finally:
        source.close()
    for key, value in state["params"].items():
        np.testing.assert_array_equal(value, trained[key])


def test_init_from_another_backbone_still_raises(source_run, six_classes, tmp_path):
    config = tiny_config(six_classes, init_from=source_run)
    config.model.backbone_kwargs.widths = (8, 16, 64)
    with pytest.raises(ValueError, match="backbone/.* has shape"):
        _initialised_run(config, str(tmp_path / "widths"))
    deeper = tiny_config(six_classes, init_from=source_run)
    deeper.model.backbone_kwargs.depth = 14
    with pytest.raises(ValueError, match="the checkpoint has no variable backbone/"):
        _initialised_run(deeper, str(tmp_path / "depth"))


def test_restoring_a_trained_model_stays_strict(source_run):
    """Without init_heads (restoring a run for the tools) a head of another shape is an error."""
    model = build_model(tiny_config({"name": "x", "data_dir": None}).model, num_classes=6, in_channels=3,
                        rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="gap_fc/fc/.* has shape"):
        checkpoint.load_weights(os.path.join(source_run, "checkpoints"),
                                nnx.state(model, nnx.Param), nnx.state(model, nnx.BatchStat))


def test_cub_recipe_smoke_trains_from_a_converted_checkpoint(tiny_boxed_dataset, tmp_path, caplog):
    torch_reference = pytest.importorskip("torch_resnet_reference")  # needs torch (requirements-dev.txt)
    reference = torch_reference.random_resnet("resnet18", num_classes=1000, seed=2)
    params, batch_stats = ct.convert(reference.state_dict(), "resnet18")
    converted = str(tmp_path / "resnet18_imagenet")
    ct.write_checkpoint(converted, params, batch_stats, "resnet18", 1000)

    config = importlib.import_module("configs.cub_finetune").get_config("smoke")
    assert config.dataset.name == "caltech_birds2011" and config.model.head == "saol"
    config.dataset.name = tiny_boxed_dataset["name"]
    config.dataset.data_dir = tiny_boxed_dataset["data_dir"]
    config.num_cpu_devices = 0
    config.num_train_steps = 2
    config.init_from = converted
    workdir = str(tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="saol_jax.core.checkpoint"):
        results = trainer.train_and_evaluate(config, workdir)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("init_from"))
    backbone_arrays = len(ct._flatten(params["backbone"])) + len(ct._flatten(batch_stats["backbone"]))
    assert f"loaded {backbone_arrays} arrays (backbone); initialised" in line
    assert "gap_fc: init_from: gap_fc/fc/" in line and "saol: init_from: the checkpoint has no variable saol/" in line
    assert results["eval/count"] == 30
    assert np.isfinite(results["eval/saol_top1"])
    assert any(name.startswith("eval/loc_") for name in results)  # the test split's boxes were used
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))


def test_missing_init_from_names_the_converter(tmp_path):
    model = build_model(tiny_config({"name": "x", "data_dir": None}).model, num_classes=4, in_channels=3,
                        rngs=nnx.Rngs(0))
    missing = str(tmp_path / "never_converted" / "checkpoints")
    with pytest.raises(FileNotFoundError, match="saol_jax.commands.convert_torchvision"):
        checkpoint.load_weights(missing, nnx.state(model, nnx.Param), nnx.state(model, nnx.BatchStat))
    assert not os.path.exists(missing)
