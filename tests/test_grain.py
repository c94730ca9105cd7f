"""The grain input path (dataset.backend='grain') and the ArrayRecord copies it reads."""

from __future__ import annotations

import io
import itertools
import multiprocessing
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from saol_jax import data
from saol_jax.data import grain_source, grain_transforms
from saol_jax.data.config import default_dataset_config
from saol_jax.data.fashion_mnist import png


def grain_config(dataset: dict, **overrides):
    """A grain-backend dataset config for `dataset` ({'name', 'data_dir'}) with `overrides`."""
    config = default_dataset_config()
    config.update({**dataset, "backend": "grain", **overrides})
    return config


def take(iterator, start: int, stop: int) -> list[dict]:
    batches = list(itertools.islice(iterator, start, stop))
    iterator.close()
    return batches


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for name in x:
            np.testing.assert_array_equal(x[name], y[name], err_msg=name)


def test_array_record_copy_equals_the_tfrecord_files(tiny_boxed_dataset):
    builder = tfds.builder(tiny_boxed_dataset["name"], data_dir=tiny_boxed_dataset["data_dir"])
    source = grain_source.data_source(builder, "train")
    tf_builder = tfds.builder(tiny_boxed_dataset["name"], data_dir=tiny_boxed_dataset["data_dir"])
    examples = list(tfds.as_numpy(tf_builder.as_dataset(split="train", shuffle_files=False)))
    assert len(source) == len(examples) == 96
    for index, example in enumerate(examples):
        for name in ("image", "label", "bbox"):
            np.testing.assert_array_equal(source[index][name], example[name], err_msg=f"{index} {name}")
    assert not grain_source.add_array_record(tf_builder)  # already there: left as it is


def test_missing_array_record_names_the_fix(tmp_path):
    from tfds_fixtures import _builder_class  # pylint: disable=import-outside-toplevel

    _builder_class("tfrecord_only", (8, 8), 1, 2, {"train": 8, "test": 4}, 0, False)(
        data_dir=str(tmp_path)).download_and_prepare()
    config = grain_config({"name": "tfrecord_only", "data_dir": str(tmp_path)})
    with pytest.raises(data.DatasetNotFoundError, match="no ArrayRecord copy") as error:
        data.host_train_batches(config, global_batch_size=4, seed=0)
    assert "python -m saol_jax.data.prepare --dataset tfrecord_only" in str(error.value)


@pytest.mark.parametrize("start", [1, 11, 25])  # mid-epoch, the last step of epoch 0, epoch 2
def test_resume_equals_uninterrupted_stream(tiny_dataset, start):
    config = grain_config(tiny_dataset)
    full = take(data.host_train_batches(config, global_batch_size=8, seed=5), start, start + 4)
    resumed = take(data.host_train_batches(config, global_batch_size=8, seed=5, start_step=start), 0, 4)
    assert_same(full, resumed)
    other_seed = take(data.host_train_batches(config, global_batch_size=8, seed=6, start_step=start), 0, 4)
    assert not all(np.array_equal(a["image"], b["image"]) for a, b in zip(full, other_seed))


def test_each_epoch_is_a_permutation_of_the_split(tiny_dataset):
    config = grain_config(tiny_dataset, augment="none")
    builder = tfds.builder(tiny_dataset["name"], data_dir=tiny_dataset["data_dir"])
    split = list(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)))
    wanted = sorted(example["image"].tobytes() for example in split)
    epochs = take(data.host_train_batches(config, global_batch_size=8, seed=1), 0, 24)  # 12 steps an epoch
    seen = [sorted(image.tobytes() for batch in epochs[e * 12:(e + 1) * 12] for image in batch["image"])
            for e in range(2)]
    assert seen[0] == wanted and seen[1] == wanted
    assert not np.array_equal(epochs[0]["image"], epochs[12]["image"])


def test_hosts_read_slices_of_the_same_global_batches(tiny_dataset, monkeypatch):
    config = grain_config(tiny_dataset)
    whole = take(data.host_train_batches(config, global_batch_size=8, seed=2, start_step=3), 0, 3)
    parts = []
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    for host in range(2):
        monkeypatch.setattr(jax, "process_index", lambda host=host: host)
        parts.append(take(data.host_train_batches(config, global_batch_size=8, seed=2, start_step=3), 0, 3))
    joined = [{name: np.concatenate([a[name], b[name]]) for name in a} for a, b in zip(*parts)]
    assert parts[0][0]["image"].shape[0] == 4
    assert_same(whole, joined)


def test_worker_processes_give_the_same_stream_and_stop_on_close(tiny_dataset):
    config = grain_config(tiny_dataset)
    in_process = take(data.host_train_batches(config, global_batch_size=8, seed=4, start_step=5), 0, 4)
    batches = data.host_train_batches(grain_config(tiny_dataset, workers=2), global_batch_size=8, seed=4,
                                      start_step=5)
    with_workers = list(itertools.islice(batches, 4))
    assert len(multiprocessing.active_children()) == 2
    batches.close()
    assert_same(in_process, with_workers)
    deadline = time.time() + 30
    while multiprocessing.active_children() and time.time() < deadline:
        time.sleep(0.1)
    assert not multiprocessing.active_children()


def test_unknown_backend_is_a_user_error(tiny_dataset):
    with pytest.raises(data.DatasetFormatError, match="backend must be one of tfdata, grain"):
        data.host_train_batches(grain_config(tiny_dataset, backend="torch"), global_batch_size=8, seed=0)


def test_eval_reads_each_example_once_padded_with_boxes(tiny_boxed_dataset):
    grain_batches = list(data.host_eval_batches(grain_config(tiny_boxed_dataset), global_batch_size=8))
    tf_batches = list(data.host_eval_batches(grain_config(tiny_boxed_dataset, backend="tfdata"),
                                             global_batch_size=8))
    assert len(grain_batches) == len(tf_batches) == 4  # 30 test examples
    assert_same(grain_batches, tf_batches)


@pytest.mark.parametrize("index", range(4))
def test_eval_shares_are_the_tfdata_shares(tiny_dataset, index):
    shares = [list(data.eval_batches(grain_config(tiny_dataset, backend=backend), global_batch_size=8,
                                     process_index=index, process_count=4))
              for backend in ("grain", "tfdata")]
    assert len(shares[0]) == 4 and sum(batch["mask"].sum() for batch in shares[0]) in (7, 8)  # of 30
    assert_same(*shares)


def test_cifar_transform_is_a_padded_crop_and_flip():
    image = np.arange(12 * 12 * 3, dtype=np.uint8).reshape(12, 12, 3)
    outs = [grain_transforms.cifar_train(image, np.random.default_rng(seed)) for seed in range(40)]
    assert all(out.shape == image.shape and out.dtype == np.uint8 for out in outs)
    assert any(np.array_equal(out, image) for out in outs) or any(np.array_equal(out, image[:, ::-1])
                                                                  for out in outs)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    for out in outs:  # every output is a window of the padded image, flipped or not
        windows = [padded[t:t + 12, l:l + 12] for t in range(9) for l in range(9)]
        assert any(np.array_equal(out, w) or np.array_equal(out, w[:, ::-1]) for w in windows)
    assert len({out.tobytes() for out in outs}) > 20


def test_crop_window_stays_inside_and_varies():
    rng = np.random.default_rng(0)
    windows = [grain_transforms.crop_window(30, 50, rng) for _ in range(200)]
    for top, left, height, width in windows:
        assert 0 <= top and 0 <= left and top + height <= 30 and left + width <= 50
        assert height * width >= 0.08 * 30 * 50 * 0.9  # rounding
    assert len(set(windows)) > 150


def test_inception_transform_is_seeded_by_its_generator():
    image = png(np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8))

    def augmented(seed: int) -> np.ndarray:
        return grain_transforms.inception_train(image, np.random.default_rng(seed), 16, 0.4, 0.1)

    assert augmented(3).shape == (16, 16, 3) and augmented(3).dtype == np.uint8
    np.testing.assert_array_equal(augmented(3), augmented(3))
    assert not np.array_equal(augmented(3), augmented(4))


def test_inception_training_and_resized_eval_batches(tiny_dataset):
    config = grain_config(tiny_dataset, augment="inception", image_size=8, color_jitter=0.4, lighting=0.1,
                          eval_resize=True)
    train = take(data.host_train_batches(config, global_batch_size=8, seed=0, start_step=2), 0, 2)
    assert train[0]["image"].shape == (8, 8, 8, 3) and train[0]["image"].dtype == np.uint8
    assert_same(train[1:], take(data.host_train_batches(config, global_batch_size=8, seed=0, start_step=3), 0, 1))
    evals = list(data.host_eval_batches(config, global_batch_size=8))
    assert evals[0]["image"].shape == (8, 8, 8, 3) and sum(batch["mask"].sum() for batch in evals) == 30


def test_inception_crop_decoded_at_reduced_scale_matches_the_full_decode():
    """A JPEG crop decoded at 1/2-1/8 scale (Image.draft) lands where the full-size crop does."""
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((400, 300), Image.BICUBIC)
    buffer = io.BytesIO()
    coarse.save(buffer, format="JPEG", quality=95)
    encoded, size, reduced = buffer.getvalue(), 24, 0
    for seed in range(20):
        got = grain_transforms.inception_train(encoded, np.random.default_rng(seed), size)
        draw = np.random.default_rng(seed)
        top, left, crop_h, crop_w = grain_transforms.crop_window(300, 400, draw)
        full = Image.open(io.BytesIO(encoded)).convert("RGB").resize(
            (size, size), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
        want = np.asarray(full.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if draw.random() < 0.5 else full)
        assert np.abs(got.astype(int) - want).mean() < 5, seed  # shifted by a tenth of its width: 14 or more
        reduced += min(crop_h, crop_w) >= 2 * size
    assert reduced >= 5  # the draws include crops that are decoded at a reduced scale
