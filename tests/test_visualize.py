"""PNG grids from a smoke-trained workdir."""

from __future__ import annotations

import os

import jax
import matplotlib.image
import numpy as np
import pytest

from commands import run_command
from configs import fashion_mnist
from saol_jax import visualize
from saol_jax.trainer import train_and_evaluate


@pytest.fixture(scope="module")
def workdir(tiny_dataset, tmp_path_factory) -> str:
    config = fashion_mnist.get_config("smoke")
    config.dataset.name = tiny_dataset["name"]
    config.dataset.data_dir = tiny_dataset["data_dir"]
    config.num_cpu_devices = 0
    path = str(tmp_path_factory.mktemp("visualize_run"))
    train_and_evaluate(config, path)
    return path


def test_write_grids_makes_both_pngs(workdir, tmp_path):
    paths = visualize.write_grids(workdir, str(tmp_path), num_images=3)
    assert [os.path.basename(p) for p in paths] == ["attention_grid.png", "cutmix_grid.png"]
    plain, mixed = (matplotlib.image.imread(p) for p in paths)
    # 3 rows of square panels: 3 columns for plain images, 5 for CutMix'ed ones.
    assert plain.shape[0] == mixed.shape[0] == 3 * 220
    assert (plain.shape[1], mixed.shape[1]) == (3 * 220, 5 * 220)
    assert plain.std() > 0 and mixed.std() > 0


def test_cli_writes_to_the_workdir_by_default(workdir):
    proc = run_command("visualize", ["--workdir", workdir, "--num_images", "2"], timeout=300)
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
