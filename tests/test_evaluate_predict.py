"""saol_jax.commands.evaluate (a saved step on any split) and saol_jax.commands.predict (image files), on one tiny boxed run."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from commands import run_command
from saol_jax.commands import evaluate, predict, visualize
from saol_jax.core.metrics import final_eval, read_events
from saol_jax.core.restore import NoCheckpointError, load_trained
from saol_jax.core.trainer import train_and_evaluate
from saol_jax.data import DatasetInfo
from test_trainer import tiny_config

NUM_IMAGES = 8
COMMAND_TIMEOUT = 300


@pytest.fixture(scope="module")
def workdir(tiny_boxed_dataset, tmp_path_factory) -> str:
    """A finished 4-step run with checkpoints at steps 2 and 4 and, at step 4, one val event (the
    recipe's validation carve, train[90%:]: 10 examples) and one eval event (test)."""
    path = str(tmp_path_factory.mktemp("evaluate_run"))
    train_and_evaluate(tiny_config(tiny_boxed_dataset), path)
    return path


@pytest.fixture(scope="module")
def trained(workdir):
    return load_trained(workdir)


@pytest.fixture(scope="module")
def png_dir(trained, tmp_path_factory) -> tuple[str, np.ndarray]:
    """The first eval images as PNG files (img_00.png, ...), and the images."""
    folder = str(tmp_path_factory.mktemp("pngs"))
    images, _, _ = visualize.eval_images(trained, NUM_IMAGES)
    for index, image in enumerate(images):
        Image.fromarray(image).save(os.path.join(folder, f"img_{index:02d}.png"))
    return folder, images


# ----------------------------------------------------------------- evaluate


def test_newest_step_on_the_eval_split_equals_the_trainers_final_eval(workdir):
    results = evaluate.evaluate_checkpoint(workdir)
    logged = final_eval(read_events(workdir), 4)
    assert results["step"] == 4 and (results["split"], results["role"]) == ("test", "test")
    measured = {k: v for k, v in results.items() if k.startswith("eval/")}
    assert set(measured) == set(logged)
    assert {"eval/saol_top1", "eval/gap_top5", "eval/saol_loss", "eval/loc_attention_iou",
            "eval/loc_cam_top1_loc", "eval/loc_product_pointing", "eval/loc_spatial_maxboxacc_v2"} <= set(measured)
    for name, value in logged.items():
        assert measured[name] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), name


def test_an_older_step_and_the_train_split(workdir):
    newest = final_eval(read_events(workdir), 4)
    older = evaluate.evaluate_checkpoint(workdir, step=2)
    assert older["step"] == 2 and older["eval/count"] == newest["eval/count"] == 30
    assert older["eval/saol_loss"] != pytest.approx(newest["eval/saol_loss"])
    train = evaluate.evaluate_checkpoint(workdir, split="train")
    assert train["split"] == "train" and train["eval/count"] == 96
    assert 0.0 <= train["eval/loc_attention_maxboxacc_50"] <= 1.0


def test_the_validation_role_reads_the_runs_carve_and_equals_its_val_event(workdir):
    results = evaluate.evaluate_checkpoint(workdir, split="validation")
    assert (results["split"], results["role"], results["eval/count"]) == ("train[90%:]", "validation", 10)
    logged = final_eval(read_events(workdir), 4, "val")
    assert {f"val/{k[len('eval/'):]}" for k in results if k.startswith("eval/")} == set(logged)
    for name, value in logged.items():
        measured = results[f"eval/{name[len('val/'):]}"]
        assert measured == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), name
    assert evaluate.evaluate_checkpoint(workdir, split="train[90%:]")["role"] == "validation"
    # The test split's box scores are taken at the thresholds the validation split chose.
    tested = final_eval(read_events(workdir), 4)
    for kind in ("attention", "cam"):
        for level in ("30", "50", "70"):
            assert tested[f"eval/loc_{kind}_threshold_{level}"] == logged[f"val/loc_{kind}_threshold_{level}"]


def test_split_roles_resolve_to_the_runs_splits():
    carved = DatasetInfo(name="d", num_classes=2, image_shape=(8, 8, 1), train_split="train[:90%]",
                         eval_split="validation", num_train=90, num_eval=10, validation_split="train[90%:]",
                         num_validation=10)
    assert evaluate.resolve_split("w", carved, "validation") == ("train[90%:]", "validation")
    assert evaluate.resolve_split("w", carved, "test") == ("validation", "test")
    assert evaluate.resolve_split("w", carved, "train[:5]") == ("train[:5]", None)
    without = dataclasses.replace(carved, validation_split=None, num_validation=0)
    with pytest.raises(evaluate.UnknownSplitError, match=r"no validation split .*--split 'validation\[:\]'"):
        evaluate.resolve_split("w", without, "validation")


def test_a_workdir_without_checkpoints_is_an_error(workdir, tmp_path):
    shutil.copy(os.path.join(workdir, "config.json"), tmp_path / "config.json")
    with pytest.raises(NoCheckpointError, match="no checkpoints"):
        evaluate.evaluate_checkpoint(str(tmp_path))
    assert not os.path.exists(tmp_path / "checkpoints")


def test_the_command_writes_json_and_explains_a_bad_split_or_step(workdir):
    done = run_command("commands.evaluate", ["--workdir", workdir], timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(workdir, "evaluate_test_step4.json"), encoding="utf-8") as f:
        written = json.load(f)
    assert written["step"] == 4 and (written["split"], written["role"]) == ("test", "test")
    assert written["eval/saol_top1"] == pytest.approx(final_eval(read_events(workdir), 4)["eval/saol_top1"])
    assert "eval/saol_top1" in done.stdout

    for args, message in ((["--split", "valid"], "has no split 'valid'; its splits: test, train"),
                          (["--step", "3"], "has no checkpoint at step 3; saved steps: 2, 4")):
        done = run_command("commands.evaluate", ["--workdir", workdir, *args], timeout=COMMAND_TIMEOUT)
        assert done.returncode != 0
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, done.stderr[-3000:]
        assert "Traceback" not in done.stderr


# ----------------------------------------------------------------- predict


def test_predict_matches_the_eval_forward_pass(trained, png_dir):
    folder, images = png_dir
    records = predict.predict(trained, predict.image_files([folder]), top_k=10, batch_size=5)
    reference = visualize.run_model(trained, images, np.zeros(len(images), np.int32))
    probs, gap = reference.probs, np.asarray(reference.outputs["gap_logits"])
    assert [os.path.basename(r["image"]) for r in records] == [f"img_{i:02d}.png" for i in range(NUM_IMAGES)]
    for b, record in enumerate(records):
        assert record["head"] == "saol" and len(record["top_k"]) == 4
        assert record["top_k"][0]["class"] == int(np.argmax(probs[b]))
        assert record["gap_fc_top1"]["class"] == int(np.argmax(gap[b]))
        assert sum(e["prob"] for e in record["top_k"]) == pytest.approx(1.0, abs=1e-5)
        by_class = {e["class"]: e["prob"] for e in record["top_k"]}
        np.testing.assert_allclose([by_class[k] for k in range(4)], probs[b], atol=1e-5)
        assert [e["name"] for e in record["top_k"]] == [str(e["class"]) for e in record["top_k"]]


def test_images_of_any_size_and_channel_count_become_the_model_input(trained, tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((30, 20), 200, np.uint8), mode="L").save(gray)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((7, 9, 4), 90, np.uint8), mode="RGBA").save(rgba)
    jpeg = tmp_path / "photo.jpg"
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(jpeg)
    for path, level in ((gray, 200), (rgba, 90), (jpeg, 120)):
        image = predict.load_image(str(path), trained)
        assert image.shape == (12, 12, 3) and image.dtype == np.uint8
        assert np.abs(image.astype(int) - level).max() <= 2
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(predict.UnreadableImageError, match="cannot decode"):
        predict.load_image(str(tmp_path / "notes.png"), trained)


def test_gap_only_outputs_give_gap_fc_probabilities():
    logits = np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    records = predict.predictions({"gap_logits": logits, "cam": np.zeros((2, 2, 2, 3))}, ["a", "b", "c"], 2)
    assert [r["head"] for r in records] == ["gap", "gap"]
    assert [e["name"] for e in records[0]["top_k"]] == ["b", "c"]
    assert records[0]["top_k"][0]["prob"] == pytest.approx(np.exp(2) / (1 + np.exp(2) + np.exp(1)))
    assert records[1]["gap_fc_top1"] == records[1]["top_k"][0]


def test_map_names_are_distinct():
    assert predict.map_names(["a/x.png", "b/x.jpg", "y.jpeg"]) == ["x.png", "x_2.png", "y.png"]


def test_the_predict_command_prints_json_lines_and_writes_maps(workdir, png_dir, tmp_path):
    folder, _ = png_dir
    maps = tmp_path / "maps"
    extra = os.path.join(folder, "img_00.png")
    done = run_command("commands.predict", ["--workdir", workdir, folder, extra, "--top_k", "2", "--maps", str(maps)],
                       timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert len(records) == NUM_IMAGES + 1
    assert all(len(r["top_k"]) == 2 for r in records)
    assert records[0]["top_k"] == records[-1]["top_k"]
    expected = sorted([f"img_{i:02d}.png" for i in range(NUM_IMAGES)] + ["img_00_2.png"])
    assert sorted(os.listdir(maps)) == expected
    assert [os.path.basename(r["map"]) for r in records][-1] == "img_00_2.png"
