"""PNG grids from a smoke-trained workdir."""

from __future__ import annotations

import os

import jax
import matplotlib.image
import numpy as np
import pytest

from commands import run_command
from configs import fashion_mnist
from saol_jax.commands import visualize
from saol_jax.core.restore import load_trained
from saol_jax.core.trainer import train_and_evaluate


PANEL_PIXELS = 220  # visualize.PANEL_INCHES at the 100 dpi of paths.save_figure


def smoke_run(dataset: dict, path: str, options: str = "smoke") -> str:
    """Trains the SAOL recipe with `options` on `dataset` ({'name', 'data_dir'}) into `path`; returns `path`."""
    config = fashion_mnist.get_config(options)
    config.dataset.name = dataset["name"]
    config.dataset.data_dir = dataset["data_dir"]
    config.num_cpu_devices = 0
    train_and_evaluate(config, path)
    return path


@pytest.fixture(scope="module")
def workdir(tiny_dataset, tmp_path_factory) -> str:
    return smoke_run(tiny_dataset, str(tmp_path_factory.mktemp("visualize_run")))


@pytest.fixture(scope="module")
def boxed_workdir(tiny_boxed_dataset, tmp_path_factory) -> str:
    return smoke_run(tiny_boxed_dataset, str(tmp_path_factory.mktemp("visualize_boxed_run")))


@pytest.fixture(scope="module")
def vit_workdir(tiny_boxed_dataset, tmp_path_factory) -> str:
    return smoke_run(tiny_boxed_dataset, str(tmp_path_factory.mktemp("visualize_vit_run")), "smoke,backbone=vit")


def test_write_grids_makes_both_pngs(workdir, tmp_path):
    paths = visualize.write_grids(workdir, str(tmp_path), num_images=3)
    # No true boxes in this dataset: no localisation grid.
    assert [os.path.basename(p) for p in paths] == ["attention_grid.png", "cutmix_grid.png"]
    plain, mixed = (matplotlib.image.imread(p) for p in paths)
    # 3 rows of square panels: 3 columns for plain images, 5 for CutMix'ed ones.
    assert plain.shape[0] == mixed.shape[0] == 3 * PANEL_PIXELS
    assert (plain.shape[1], mixed.shape[1]) == (3 * PANEL_PIXELS, 5 * PANEL_PIXELS)
    assert plain.std() > 0 and mixed.std() > 0


def test_a_dataset_with_boxes_adds_the_localisation_grid(boxed_workdir, tmp_path):
    paths = visualize.write_grids(boxed_workdir, str(tmp_path), num_images=3)
    assert [os.path.basename(p) for p in paths] == ["attention_grid.png", "cutmix_grid.png", "localisation_grid.png"]
    grid = matplotlib.image.imread(paths[-1])
    # 3 rows of square panels: the image, attention, spatial map and CAM.
    assert grid.shape[:2] == (3 * PANEL_PIXELS, 4 * PANEL_PIXELS)
    assert grid.std() > 0


def test_a_vit_run_adds_its_attention_rollout_beside_saols_attention(vit_workdir, tmp_path):
    paths = visualize.write_grids(vit_workdir, str(tmp_path), num_images=3)
    assert [os.path.basename(p) for p in paths] == [
        "attention_grid.png", "cutmix_grid.png", "localisation_grid.png", "vit_attention_grid.png"]
    grid = matplotlib.image.imread(paths[-1])
    # 3 rows of square panels: the image, SAOL's attention and the rollout.
    assert grid.shape[:2] == (3 * PANEL_PIXELS, 3 * PANEL_PIXELS)
    assert grid.std() > 0
    trained = load_trained(vit_workdir)
    images, _, _ = visualize.eval_images(trained, 3)
    rollout = visualize.vit_rollout(trained, images, (3, 3))  # 12x12 images, patch 4
    assert rollout.shape == (3, 3, 3)
    np.testing.assert_allclose(rollout.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    assert np.all(rollout > 0)


def test_a_resnet_run_has_no_rollout(workdir):
    trained = load_trained(workdir)
    images, _, _ = visualize.eval_images(trained, 2)
    assert visualize.vit_rollout(trained, images, (3, 3)) is None


def test_localisation_grid_of_a_gap_model_shows_the_image_and_the_cam(tmp_path):
    rng = np.random.default_rng(0)
    maps = visualize.Maps(
        images=rng.integers(0, 256, (2, 12, 12, 3), dtype=np.uint8),
        labels=np.array([0, 3]),
        boxes=np.array([[0.0, 0.0, 0.5, 0.5], [0.25, 0.5, 1.0, 1.0]], np.float32),
        outputs={"gap_logits": rng.normal(size=(2, 4)).astype(np.float32),
                 "cam": rng.normal(size=(2, 3, 3, 4)).astype(np.float32)},
    )
    path = visualize.localisation_grid(maps, ["a", "b", "c", "d"], str(tmp_path / "grid.png"))
    assert matplotlib.image.imread(path).shape[:2] == (2 * PANEL_PIXELS, 2 * PANEL_PIXELS)


def test_threshold_boxes_bound_the_hot_cell():
    cell_maps = np.zeros((1, 3, 3), np.float32)
    cell_maps[0, 0, 2] = 1.0
    boxes = visualize.threshold_boxes(cell_maps, (12, 12))
    # The top-right cell's own pixels are rows 0-3, columns 8-11; bilinear upsampling spreads it by one pixel.
    np.testing.assert_array_equal(visualize.pixel_boxes(boxes, (12, 12)), [[0, 7, 5, 12]])


def test_cli_writes_to_the_workdir_by_default(workdir):
    proc = run_command("commands.visualize", ["--workdir", workdir, "--num_images", "2"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    paths = proc.stdout.split()
    assert len(paths) == 2
    assert all(os.path.dirname(p) == os.path.join(workdir, "visualize") for p in paths)
    assert all(os.path.getsize(p) > 0 for p in paths)


def test_paste_boxes_pastes_the_next_image_inside_the_box():
    images = np.stack([np.full((8, 8, 1), v, np.uint8) for v in (10, 20, 30)])
    mixed, partner, boxes = visualize.paste_boxes(images, jax.random.key(1))
    np.testing.assert_array_equal(partner, [1, 2, 0])
    for b, (y0, x0, y1, x1) in enumerate(boxes):
        inside = np.zeros((8, 8), bool)
        inside[y0:y1, x0:x1] = True
        assert np.all(mixed[b, inside] == images[partner[b], 0, 0])
        assert np.all(mixed[b, ~inside] == images[b, 0, 0])
