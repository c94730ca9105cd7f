"""Tiny, learnable tfds-format datasets written on the fly for the tests.

Each class puts a bright square in its own quadrant (classes beyond four
reuse the quadrants at a different brightness) over low-level noise, so a few
training steps separate the classes; `boxes=True` adds the square's box as a
top-level `bbox` feature (normalised [ymin, xmin, ymax, xmax]). The dataset
is written with a real `GeneratorBasedBuilder`, not registered, so
`tfds.builder(name, data_dir=D)` loads it from its files exactly as a
separate training process would.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from saol_jax.data.grain_source import add_array_record


def tiny_example(label: int, rng: np.random.Generator, image_size: tuple[int, int], channels: int,
                 num_classes: int) -> tuple[np.ndarray, tfds.features.BBox]:
    """One uint8 image of class `label` (noise plus a square in the class's quadrant) and the square's box."""
    height, width = image_size
    image = rng.integers(0, 60, size=(height, width, channels), dtype=np.uint8)
    quadrant, level = label % 4, label // 4
    levels = max(1, -(-num_classes // 4))
    brightness = 255 - level * (150 // levels)
    half_h, half_w = height // 2, width // 2
    side = max(2, min(half_h, half_w) - 2)
    top = (quadrant // 2) * half_h + rng.integers(0, half_h - side + 1)
    left = (quadrant % 2) * half_w + rng.integers(0, half_w - side + 1)
    image[top:top + side, left:left + side] = brightness
    return image, tfds.features.BBox(top / height, left / width, (top + side) / height, (left + side) / width)


def _builder_class(name: str, image_size: tuple[int, int], channels: int, num_classes: int,
                   split_sizes: dict[str, int], seed: int, boxes: bool) -> type[tfds.core.GeneratorBasedBuilder]:
    """A one-off builder class named `name`, kept out of tfds's registry."""

    class TinyShapes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self) -> tfds.core.DatasetInfo:
            features = {
                "image": tfds.features.Image(shape=(*image_size, channels)),
                "label": tfds.features.ClassLabel(num_classes=num_classes),
            }
            if boxes:
                features["bbox"] = tfds.features.BBoxFeature()
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features), supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._generate_examples(split, n) for split, n in split_sizes.items()}

        def _generate_examples(self, split: str, num_examples: int):
            rng = np.random.default_rng([seed, len(split), num_examples])
            labels = np.arange(num_examples) % num_classes
            rng.shuffle(labels)
            for index, label in enumerate(labels):
                image, box = tiny_example(int(label), rng, image_size, channels, num_classes)
                yield index, {"image": image, "label": int(label), **({"bbox": box} if boxes else {})}

    TinyShapes.name = name
    return TinyShapes


def write_tiny_dataset(data_dir: str, *, name: str = "tiny_shapes", num_train: int = 96,
                       num_test: int = 30, image_size: tuple[int, int] = (12, 12), channels: int = 3,
                       num_classes: int = 4, seed: int = 0, boxes: bool = False) -> str:
    """Writes the dataset `name` (splits 'train' and 'test') under `data_dir`; returns `data_dir`.

    `boxes=True` adds each square's box as the feature `bbox`. Written in TFRecord with an
    ArrayRecord copy, as `python -m saol_jax.data.prepare` writes, so both backends read it.
    """
    cls = _builder_class(name, tuple(image_size), channels, num_classes,
                         {"train": num_train, "test": num_test}, seed, boxes)
    cls(data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    add_array_record(tfds.builder(name, data_dir=data_dir))
    return data_dir


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> dict:
    """A tiny 4-class 12x12x3 dataset: {'name', 'data_dir'} for a dataset config."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    write_tiny_dataset(data_dir)
    return {"name": "tiny_shapes", "data_dir": data_dir}


@pytest.fixture(scope="session")
def tiny_boxed_dataset(tmp_path_factory) -> dict:
    """`tiny_dataset` with each square's true box as `bbox`: {'name', 'data_dir'}."""
    data_dir = str(tmp_path_factory.mktemp("tfds_boxed"))
    write_tiny_dataset(data_dir, name="tiny_boxed_shapes", boxes=True)
    return {"name": "tiny_boxed_shapes", "data_dir": data_dir}
