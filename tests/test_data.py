"""Tests of the data package: tfds pipelines, preprocessing, Fashion-MNIST preparation."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tfds_fixtures import write_tiny_dataset

from saol_jax.data import (
    DatasetFormatError,
    DatasetNotFoundError,
    carved_splits,
    default_dataset_config,
    eval_batches,
    eval_steps,
    host_eval_batches,
    load_info,
    prepare_fashion_mnist,
    steps_per_epoch,
    train_batches,
)
from configs import fashion_mnist
from saol_jax.data import prepare, preprocess
from saol_jax.data.fashion_mnist import DEFAULT_SOURCE_DIR, read_idx
from saol_jax.data.grain_source import data_source

FASHION_SOURCE_PRESENT = os.path.isdir(DEFAULT_SOURCE_DIR)


def make_config(dataset: dict, **overrides):
    """A dataset config for `dataset` ({'name', 'data_dir'}) with `overrides`."""
    config = default_dataset_config()
    config.update({**dataset, **overrides})
    return config


def split_arrays(dataset: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All (images, labels) of a split, in file order, straight from tfds."""
    builder = tfds.builder(dataset["name"], data_dir=dataset["data_dir"])
    return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))


def sorted_rows(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(image, label) pairs as rows in a canonical order, to compare multisets."""
    rows = np.concatenate([images.reshape(len(images), -1), labels.reshape(-1, 1).astype(np.uint8)], 1)
    return rows[np.lexsort(rows.T[::-1])]


def take(iterator, start: int, stop: int) -> list[dict]:
    return list(itertools.islice(iterator, start, stop))


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


@pytest.fixture(scope="module")
def gray_dataset(tmp_path_factory) -> dict:
    """A second shape of dataset: 5 classes, 10x14 grayscale, odd split sizes."""
    data_dir = str(tmp_path_factory.mktemp("tfds_gray"))
    write_tiny_dataset(data_dir, name="tiny_gray", num_train=37, num_test=11, image_size=(10, 14),
                       channels=1, num_classes=5, seed=3)
    return {"name": "tiny_gray", "data_dir": data_dir}


# ----------------------------------------------------------------------------- info


def test_info_comes_from_the_dataset(tiny_dataset, gray_dataset):
    info = load_info(make_config(tiny_dataset))
    assert (info.num_classes, info.image_shape, info.num_train, info.num_eval) == (4, (12, 12, 3), 96, 30)
    assert (info.train_split, info.eval_split) == ("train", "test")
    gray = load_info(make_config(gray_dataset))
    assert (gray.num_classes, gray.image_shape, gray.num_train, gray.num_eval) == (5, (10, 14, 1), 37, 11)


def test_image_size_sets_the_model_input(tiny_dataset):
    config = make_config(tiny_dataset, image_size=16)
    assert load_info(config).image_shape == (16, 16, 3)
    assert next(train_batches(config, global_batch_size=4, seed=0))["image"].shape == (4, 16, 16, 3)
    assert next(eval_batches(config, global_batch_size=4))["image"].shape == (4, 16, 16, 3)


# ----------------------------------------------------------------------------- train


@pytest.mark.parametrize("cache", [True, False])
def test_train_batches_cover_an_epoch(tiny_dataset, cache):
    config = make_config(tiny_dataset, augment="none", cache=cache)
    batches = take(train_batches(config, global_batch_size=8, seed=0), 0, 12)  # 96 / 8: one epoch
    for batch in batches:
        assert batch["image"].dtype == np.uint8 and batch["image"].shape == (8, 12, 12, 3)
        assert batch["label"].dtype == np.int32 and batch["label"].shape == (8,)
    images = np.concatenate([b["image"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(sorted_rows(images, labels), sorted_rows(*split_arrays(tiny_dataset, "train")))


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("start", [3, 10])  # 12 steps per epoch: 10..15 crosses into epoch 1
def test_resume_equals_uninterrupted_stream(tiny_dataset, cache, start):
    config = make_config(tiny_dataset, cache=cache, shuffle_buffer=32)
    full = take(train_batches(config, global_batch_size=8, seed=5), start, start + 6)
    resumed = take(train_batches(config, global_batch_size=8, seed=5, start_step=start), 0, 6)
    assert_same_batches(full, resumed)


def test_seeds_and_epochs_change_the_stream(tiny_dataset):
    config = make_config(tiny_dataset)
    first = take(train_batches(config, global_batch_size=8, seed=1), 0, 24)
    again = take(train_batches(config, global_batch_size=8, seed=1), 0, 24)
    other = take(train_batches(config, global_batch_size=8, seed=2), 0, 24)
    assert_same_batches(first, again)
    assert any((a["image"] != b["image"]).any() for a, b in zip(first, other))
    epoch0 = np.concatenate([b["label"] for b in first[:12]])
    epoch1 = np.concatenate([b["label"] for b in first[12:]])
    assert (epoch0 != epoch1).any()


def test_train_hosts_read_disjoint_shares(tiny_dataset):
    config = make_config(tiny_dataset, augment="none")
    shares = [take(train_batches(config, global_batch_size=8, seed=0, process_index=i, process_count=2), 0, 12)
              for i in range(2)]
    assert shares[0][0]["image"].shape == (4, 12, 12, 3)
    images = np.concatenate([b["image"] for share in shares for b in share])
    labels = np.concatenate([b["label"] for share in shares for b in share])
    np.testing.assert_array_equal(sorted_rows(images, labels), sorted_rows(*split_arrays(tiny_dataset, "train")))


def test_batch_size_must_split_over_processes(tiny_dataset):
    config = make_config(tiny_dataset)
    with pytest.raises(ValueError, match="process count"):
        train_batches(config, global_batch_size=9, seed=0, process_index=0, process_count=2)
    with pytest.raises(ValueError, match="process count"):
        eval_batches(config, global_batch_size=9, process_index=0, process_count=2)


# ----------------------------------------------------------------------------- eval


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_eval_covers_each_example_once(tiny_dataset, process_count):
    config = make_config(tiny_dataset)
    steps = eval_steps(load_info(config).num_eval, 8, process_count=process_count)
    images, labels = [], []
    for index in range(process_count):
        batches = list(eval_batches(config, global_batch_size=8, process_index=index, process_count=process_count))
        assert len(batches) == steps
        for batch in batches:
            assert batch["image"].shape == (8 // process_count, 12, 12, 3) and batch["mask"].dtype == bool
            images.append(batch["image"][batch["mask"]])
            labels.append(batch["label"][batch["mask"]])
    split_images, split_labels = split_arrays(tiny_dataset, "test")
    np.testing.assert_array_equal(np.concatenate(images), split_images)
    np.testing.assert_array_equal(np.concatenate(labels), split_labels)


# ----------------------------------------------------------------------------- validation carve


def test_the_carve_is_disjoint_from_train_and_has_its_size(tiny_dataset):
    train_split, validation_split = carved_splits(10)
    assert (train_split, validation_split) == ("train[:90%]", "train[90%:]")
    info = load_info(make_config(tiny_dataset, train_split=train_split, validation_split=validation_split))
    assert (info.num_train, info.num_validation, info.validation_shared) == (86, 10, 0)  # 96: 90% rounds to 86
    assert steps_per_epoch(info, 8) == 86 // 8
    # Together, in order, the two slices are the whole train split: disjoint, nothing left out.
    train, validation = split_arrays(tiny_dataset, train_split), split_arrays(tiny_dataset, validation_split)
    whole = split_arrays(tiny_dataset, "train")
    for part in range(2):
        np.testing.assert_array_equal(np.concatenate([train[part], validation[part]]), whole[part])
    with pytest.raises(ValueError, match="between 0 and 100"):
        carved_splits(100)


def test_a_validation_split_that_overlaps_train_or_eval_is_counted(tiny_dataset):
    overlapping = load_info(make_config(tiny_dataset, train_split="train[:90%]", validation_split="train[80:]"))
    assert overlapping.validation_shared == 86 - 80
    on_test = load_info(make_config(tiny_dataset, validation_split="test[:5]+train[90:]"))
    assert on_test.validation_shared == 6  # the larger of 6 shared with 'train' and 5 with 'test'
    assert load_info(make_config(tiny_dataset)).validation_split is None


@pytest.mark.parametrize("process_count", [2, 4])
def test_hosts_cover_a_sliced_split_once(tiny_dataset, process_count):
    config = make_config(tiny_dataset, augment="none", train_split="train[:80]")
    epoch = [b for i in range(process_count)  # 80 / 8: ten global batches an epoch
             for b in take(train_batches(config, global_batch_size=8, seed=0, process_index=i,
                                         process_count=process_count), 0, 10)]
    images, labels = (np.concatenate([b[key] for b in epoch]) for key in ("image", "label"))
    np.testing.assert_array_equal(sorted_rows(images, labels), sorted_rows(*split_arrays(tiny_dataset, "train[:80]")))
    read = [b for i in range(process_count)
            for b in eval_batches(config, global_batch_size=8, split="train[86:]", process_index=i,
                                  process_count=process_count)]
    images, labels = (np.concatenate([b[key][b["mask"]] for b in read]) for key in ("image", "label"))
    for got, want in zip((images, labels), split_arrays(tiny_dataset, "train[86:]")):
        np.testing.assert_array_equal(got, want)


def test_host_shards_of_a_sliced_split_cover_it_once(tiny_dataset):
    config = make_config(tiny_dataset, host_shards=4)
    read = list(host_eval_batches(config, global_batch_size=8, split="train[86:]"))
    assert len(read) == eval_steps(10, 8, process_count=4)
    images = np.concatenate([b["image"][b["mask"]] for b in read])
    np.testing.assert_array_equal(sorted_rows(images, np.zeros(len(images))),
                                  sorted_rows(split_arrays(tiny_dataset, "train[86:]")[0], np.zeros(10)))


# ----------------------------------------------------------------------------- missing data


@pytest.mark.parametrize("name, command", [
    ("fashion_mnist", "python -m saol_jax.data.prepare --data_dir {d}"),
    ("cifar10", "python -m saol_jax.data.prepare --dataset cifar10 --data_dir {d}"),
    ("imagenet2012", "python -m saol_jax.data.prepare --dataset imagenet2012 --data_dir {d} --manual_dir"),
])
def test_missing_dataset_names_the_fix(tmp_path, name, command):
    config = make_config({"name": name, "data_dir": str(tmp_path)})
    with pytest.raises(DatasetNotFoundError, match=name) as error:
        train_batches(config, global_batch_size=8, seed=0)
    assert command.format(d=tmp_path) in str(error.value)
    assert isinstance(error.value, FileNotFoundError)


def test_unknown_name_gives_a_hint(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="cifar_10.*Did you mean: .*cifar10"):
        load_info(make_config({"name": "cifar_10", "data_dir": str(tmp_path)}))


def test_missing_data_dir_is_named(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="does not exist") as error:
        eval_batches(make_config({"name": "fashion_mnist", "data_dir": missing}), global_batch_size=8)
    assert missing in str(error.value) and "saol_jax.data.prepare" in str(error.value)


# ----------------------------------------------------------------------------- preprocessing


def _image(shape, seed=0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


def _seed(*values) -> tf.Tensor:
    return tf.constant(values, tf.int64)


def test_cifar_train_is_a_padded_shift_or_flip():
    image = _image((12, 12, 3))
    padded = np.pad(image.numpy(), [(4, 4), (4, 4), (0, 0)])
    outputs = [preprocess.cifar_train(image, _seed(0, k)).numpy() for k in range(8)]
    for out in outputs:
        assert out.shape == (12, 12, 3) and out.dtype == np.uint8
        crops = [padded[y:y + 12, x:x + 12] for y in range(9) for x in range(9)]
        assert any((out == c).all() or (out == c[:, ::-1]).all() for c in crops)
    np.testing.assert_array_equal(outputs[0], preprocess.cifar_train(image, _seed(0, 0)).numpy())
    assert any((o != outputs[0]).any() for o in outputs[1:])


@pytest.mark.parametrize("channels, jitter, lighting", [(3, 0.4, 0.1), (3, 0.0, 0.0), (1, 0.4, 0.0)])
def test_inception_train_shape_and_determinism(channels, jitter, lighting):
    image = _image((40, 30, channels))
    out = preprocess.inception_train(image, _seed(1, 2), 24, jitter, lighting)
    assert out.shape == (24, 24, channels) and out.dtype == tf.uint8
    np.testing.assert_array_equal(out, preprocess.inception_train(image, _seed(1, 2), 24, jitter, lighting))
    assert (out.numpy() != preprocess.inception_train(image, _seed(1, 3), 24, jitter, lighting).numpy()).any()


def test_resize_center_crop_takes_the_centre():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 20:60] = 200  # the central 40x40 square
    out = preprocess.resize_center_crop(tf.constant(image), 14, crop_fraction=0.875)
    assert out.shape == (14, 14, 3) and out.dtype == tf.uint8
    assert (out.numpy()[:, 1:-1] == 200).all()  # 16-pixel short side: 14 central columns of 32


# ----------------------------------------------------------------------------- Fashion-MNIST


def test_prepare_without_source_files_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        prepare_fashion_mnist(str(tmp_path / "tfds"), source_dir=str(tmp_path / "no_source"))


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory) -> str:
    if not FASHION_SOURCE_PRESENT:
        pytest.skip(f"SKIPPED: {DEFAULT_SOURCE_DIR} missing (apt-get install dataset-fashion-mnist)")
    return prepare_fashion_mnist(str(tmp_path_factory.mktemp("fashion")))


def test_prepared_fashion_mnist_reads_like_tfds(fashion_dir):
    train, info = tfds.load("fashion_mnist", split="train", data_dir=fashion_dir, download=False,
                            with_info=True, as_supervised=True, batch_size=-1)
    assert (info.splits["train"].num_examples, info.splits["test"].num_examples) == (60000, 10000)
    ours = load_info(make_config({"name": "fashion_mnist", "data_dir": fashion_dir}))
    assert (ours.num_classes, ours.image_shape, ours.num_train, ours.num_eval) == (10, (28, 28, 1), 60000, 10000)
    images, labels = tfds.as_numpy(train)
    idx_images = read_idx(os.path.join(DEFAULT_SOURCE_DIR, "train-images-idx3-ubyte.gz"))
    idx_labels = read_idx(os.path.join(DEFAULT_SOURCE_DIR, "train-labels-idx1-ubyte.gz"))
    first = np.flatnonzero((images[..., 0] == idx_images[0]).all(axis=(1, 2)))
    assert len(first) >= 1 and set(labels[first]) == {idx_labels[0]}


def test_the_recipes_validation_carve_is_class_balanced(fashion_dir):
    dataset = fashion_mnist.get_config().dataset
    dataset.data_dir = fashion_dir
    info = load_info(dataset)
    assert (info.num_train, info.num_validation, info.validation_shared) == (54000, 6000, 0)
    _, labels = split_arrays({"name": "fashion_mnist", "data_dir": fashion_dir}, dataset.validation_split)
    counts = np.bincount(labels, minlength=10)
    # tfds's hashed storage order makes the tail a fixed pseudo-random draw: 600 a class, give or
    # take sampling noise (a Pearson chi-square of 6.1 on 9 degrees of freedom), not a sorted block.
    assert counts.min() >= 540 and counts.max() <= 660, counts
    assert ((counts - 600) ** 2 / 600).sum() < 21.7  # the chi-square's 99th percentile


def test_prepare_cli_is_idempotent(fashion_dir, capsys):
    args = ["--data_dir", fashion_dir, "--cluttered_train", "20", "--cluttered_test", "10",
            "--target_train", "20", "--target_validation", "10", "--target_test", "10"]
    assert prepare.main(args) == 0
    assert prepare.main(args) == 0
    out = capsys.readouterr().out
    assert fashion_dir in out and "cluttered_fashion_mnist ready" in out


@pytest.mark.parametrize("name, split", [("fashion_mnist", "train"), ("cluttered_fashion_mnist", "test")])
def test_prepared_datasets_read_alike_by_both_backends(fashion_dir, name, split):
    """`prepare` writes TFRecord and an ArrayRecord copy: example i is the same through either."""
    assert prepare.main(["--data_dir", fashion_dir, "--cluttered_train", "20", "--cluttered_test", "10"]) == 0
    source = data_source(tfds.builder(name, data_dir=fashion_dir), split)
    builder = tfds.builder(name, data_dir=fashion_dir)
    examples = tfds.as_numpy(builder.as_dataset(split=f"{split}[:10]", shuffle_files=False))
    assert len(source) == builder.info.splits[split].num_examples
    for index, example in enumerate(examples):
        assert source[index].keys() == example.keys()
        for feature in example:
            np.testing.assert_array_equal(source[index][feature], example[feature], err_msg=f"{index} {feature}")


# ----------------------------------------------------------------- datasets without supervised keys


def _store_adhoc(data_dir: str, name: str, image_key: str, label_key: str) -> dict:
    """A dataset written with tfds's ad-hoc API, which declares no supervised keys."""
    rng = np.random.default_rng(0)
    examples = [{image_key: rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), label_key: i % 3} for i in range(24)]
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version="1.0.0", data_dir=data_dir,
        features=tfds.features.FeaturesDict({
            image_key: tfds.features.Image(shape=(8, 8, 3)),
            label_key: tfds.features.ClassLabel(num_classes=3),
        }),
        split_datasets={"train": list(enumerate(examples[:16])), "test": list(enumerate(examples[16:]))},
    )
    return {"name": name, "data_dir": data_dir}


def test_adhoc_dataset_with_image_and_label_features_trains(tmp_path):
    dataset = _store_adhoc(str(tmp_path), "adhoc_plain", "image", "label")
    config = make_config(dataset, augment="none")
    info = load_info(config)
    assert (info.num_classes, info.image_shape, info.num_train) == (3, (8, 8, 3), 16)
    batch = next(train_batches(config, global_batch_size=4, seed=0))
    assert batch["image"].shape == (4, 8, 8, 3) and set(batch["label"]) <= {0, 1, 2}
    evaluated = list(eval_batches(config, global_batch_size=4))
    assert sum(int(b["mask"].sum()) for b in evaluated) == 8


def test_adhoc_dataset_with_other_feature_names(tmp_path):
    dataset = _store_adhoc(str(tmp_path), "adhoc_named", "pixels", "kind")
    with pytest.raises(DatasetFormatError, match=r"features: kind, pixels.*--config.dataset.image_key="):
        load_info(make_config(dataset))
    info = load_info(make_config(dataset, image_key="pixels", label_key="kind"))
    assert info.num_classes == 3
