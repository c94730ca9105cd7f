"""Cluttered Fashion-MNIST: a localisation benchmark with true boxes, built offline.

Each example is a 64x64 grayscale canvas holding one Fashion-MNIST item,
resized to a random side of 20-44 pixels and placed at a random position,
among 3-6 fragments (random 8-14 pixel crops) of other items of the same
split, with light Gaussian noise. Fragments never overlap the item's box,
so the box is exactly the item's extent: the tight box of its pixels above
`INK_LEVEL`, a tfds BBoxFeature (normalised [ymin, xmin, ymax, xmax]).

Train examples come from Fashion-MNIST's train split, test examples from its
test split (items and fragments alike), so no test pixel is seen in
training. Everything is a function of `seed`: the item chosen for each
example (a random subset when fewer examples than items are asked for),
scale, position, fragments and noise (one numpy generator per example).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from saol_jax.data.fashion_mnist import (
    CanvasBenchmark,
    SPLIT_FILES,
    png,
    read_idx,
)

NAME = "cluttered_fashion_mnist"
CANVAS = 64
ITEM_SIDES = (20, 44)  # inclusive range of the item's resized side, pixels
FRAGMENTS = (3, 6)  # inclusive range of fragments per canvas
FRAGMENT_SIDES = (8, 14)  # inclusive range of a fragment's side, pixels
FRAGMENT_GAIN = (0.5, 1.0)  # fragment brightness factor
NOISE_STD = 10.0  # Gaussian noise, on the 0-255 scale
INK_LEVEL = 24  # item pixels above this define the true box
DEFAULT_SIZES = {"train": 20_000, "test": 5_000}
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_SPLIT_IDS = {"train": 0, "test": 1}


def resize_item(item: np.ndarray, side: int) -> np.ndarray:
    """uint8 [h, w] -> float32 [side, side] (bilinear)."""
    return np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR), np.float32)


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Half-open pixel box (y0, x0, y1, x1) around the True pixels of a non-empty mask [H, W]."""
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _fragment(rng: np.random.Generator, items: np.ndarray, exclude: int) -> np.ndarray:
    """A random square crop (float32) of a random item other than `exclude`, dimmed."""
    index = int(rng.integers(len(items) - 1))
    index += index >= exclude
    side = int(rng.integers(FRAGMENT_SIDES[0], FRAGMENT_SIDES[1] + 1))
    item = items[index]
    top, left = rng.integers(0, item.shape[0] - side + 1, size=2)
    crop = item[top:top + side, left:left + side].astype(np.float32)
    return crop * rng.uniform(*FRAGMENT_GAIN)


def compose(rng: np.random.Generator, items: np.ndarray, index: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One canvas: item `index` of `items` [N, 28, 28] with clutter and noise.

    Returns uint8 [CANVAS, CANVAS, 1] and the item's half-open pixel box.
    """
    canvas = np.zeros((CANVAS, CANVAS), np.float32)
    side = int(rng.integers(ITEM_SIDES[0], ITEM_SIDES[1] + 1))
    item = resize_item(items[index], side)
    top, left = rng.integers(0, CANVAS - side + 1, size=2)
    canvas[top:top + side, left:left + side] = item
    y0, x0, y1, x1 = tight_box(item > INK_LEVEL)
    box = (int(top) + y0, int(left) + x0, int(top) + y1, int(left) + x1)
    for _ in range(int(rng.integers(FRAGMENTS[0], FRAGMENTS[1] + 1))):
        fragment = _fragment(rng, items, index)
        size = fragment.shape[0]
        for _attempt in range(20):  # a free spot outside the item's box; skipped if none is found
            fy, fx = (int(v) for v in rng.integers(0, CANVAS - size + 1, size=2))
            if not _overlaps((fy, fx, fy + size, fx + size), box):
                region = canvas[fy:fy + size, fx:fx + size]
                np.maximum(region, fragment, out=region)
                break
    canvas += rng.normal(0.0, NOISE_STD, canvas.shape).astype(np.float32)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return image[..., None], box


def normalised_box(box: tuple[int, int, int, int]) -> tfds.features.BBox:
    y0, x0, y1, x1 = box
    return tfds.features.BBox(y0 / CANVAS, x0 / CANVAS, y1 / CANVAS, x1 / CANVAS)


class ClutteredFashionMNIST(CanvasBenchmark, skip_registration=True):
    """The benchmark as a tfds dataset: `image` (64x64x1), `label`, `bbox`; splits train and test.

    `sizes` sets the examples per split (default 20,000 / 5,000; at most the
    60,000 / 10,000 of Fashion-MNIST). The sizes and seed are part of what is
    written: prepare different settings into different data_dirs.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "64x64 canvas, items 20-44 px, 3-6 fragments, noise std 10."}
    name = NAME
    DEFAULT_SIZES = DEFAULT_SIZES

    def _info(self) -> tfds.core.DatasetInfo:
        return self._canvas_info(__doc__, CANVAS, CLASS_NAMES)

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
        images_file, labels_file = SPLIT_FILES[split]
        items = read_idx(os.path.join(self._source_dir, images_file))
        labels = read_idx(os.path.join(self._source_dir, labels_file))
        num = self._sizes[split]
        if num > len(items):
            raise ValueError(f"{split}: asked for {num} examples, Fashion-MNIST has {len(items)}")
        chosen = np.random.default_rng([self._seed, _SPLIT_IDS[split]]).permutation(len(items))[:num]
        for key, index in enumerate(chosen):
            rng = np.random.default_rng([self._seed, _SPLIT_IDS[split], key])
            image, box = compose(rng, items, int(index))
            yield key, {"image": png(image), "label": int(labels[index]), "bbox": normalised_box(box)}
