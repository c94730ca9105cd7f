"""Target Fashion-MNIST: a localisation benchmark where the class decides the location, built offline.

Each example is a 64x64 grayscale canvas holding one *target* item, from
one of the five target classes, among 2-4 *distractor* items from the five
other Fashion-MNIST classes. The label is the target's class (five classes)
and the box is the target's. Every item, target or distractor, goes through
the same draws: its ink (pixels above `INK_LEVEL`) is cropped, resized so
that its longer side is 16-32 pixels, dimmed by a gain of 0.6-1.0, and
pasted at a uniformly random position. Items may touch and overlap, in a
random layer order, as long as no item's box is covered by more than
`MAX_COVERED` of its area by the other items' boxes, so the target is never
hidden and a distractor is as visible as the target. Light Gaussian noise
is added last. Brightness, size and position thus say nothing about which
item is the target: only its class does.

Target classes: T-shirt/top, Trouser, Dress, Sandal, Bag; distractors:
Pullover, Coat, Shirt, Sneaker, Ankle boot. Each target class has a close
relative among the distractors (T-shirt/Shirt, Dress/Coat, Sandal/Sneaker,
Bag/Pullover by their filled silhouettes), so a coarse shape category does
not find the target either.

Splits: `train` and `validation` are drawn from disjoint pools of
Fashion-MNIST's train images (a fixed permutation of its 60,000 images:
the first 12,000, `VALIDATION_SHARE`, form the validation pool, the rest
the train pool; targets and distractors alike), `test` from Fashion-MNIST's test
images. Each target item appears at most once in a split; distractors are
drawn with replacement from the pool's distractor classes. Everything is a
function of `seed`.

Features: `image` (64x64x1), `label` (target class), `bbox` (the target's
box, a tfds BBoxFeature, normalised [ymin, xmin, ymax, xmax]), and for
exact baselines and tests `item_bbox` and `item_class` (every item's box
and its Fashion-MNIST class, in layer order, bottom first) with
`target_layer` (the target's index there).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from saol_jax.data.cluttered_fashion_mnist import CLASS_NAMES, normalised_box, tight_box
from saol_jax.data.fashion_mnist import (
    CanvasBenchmark,
    SPLIT_FILES,
    png,
    read_idx,
)

NAME = "target_fashion_mnist"
CANVAS = 64
TARGET_CLASSES = (0, 1, 3, 5, 8)  # Fashion-MNIST class ids of the label space
DISTRACTOR_CLASSES = tuple(c for c in range(10) if c not in TARGET_CLASSES)
DISTRACTORS = (2, 4)  # inclusive range of distractors per canvas
ITEM_SIDES = (16, 32)  # inclusive range of an item's longer side, pixels
ITEM_GAIN = (0.6, 1.0)  # brightness factor of every item
MAX_COVERED = 0.25  # most of an item's box area that the other items' boxes may cover
PLACEMENT_TRIES = 100  # random positions tried per item before the canvas is drawn again
CANVAS_TRIES = 100  # canvases drawn before the settings are declared unplaceable
ALPHA_LEVEL = 64.0  # an item pixel of this (undimmed) value or more is opaque
NOISE_STD = 10.0  # Gaussian noise, on the 0-255 scale
INK_LEVEL = 24  # source pixels above this are the item's ink, which its crop bounds
VALIDATION_SHARE = 0.2  # of Fashion-MNIST's train images set aside for the validation split (12,000)
DEFAULT_SIZES = {"train": 20_000, "validation": 5_000, "test": 5_000}
_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


def item_crop(item: np.ndarray, side: int) -> np.ndarray:
    """uint8 [28, 28] -> float32 [h, w]: the ink's tight crop, resized (bilinear) to longer side `side`."""
    y0, x0, y1, x1 = tight_box(item > INK_LEVEL)
    crop = item[y0:y1, x0:x1]
    scale = side / max(crop.shape)
    height, width = (max(1, round(n * scale)) for n in crop.shape)
    return np.asarray(Image.fromarray(crop).resize((width, height), Image.BILINEAR), np.float32)


def covered_fractions(boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """[N] share of each half-open pixel box's area covered by the union of the other boxes."""
    masks = np.zeros((len(boxes), CANVAS, CANVAS), bool)
    for mask, (y0, x0, y1, x1) in zip(masks, boxes):
        mask[y0:y1, x0:x1] = True
    counts = masks.sum(axis=0)
    covered = (masks & (counts > 1)).sum(axis=(1, 2))
    return covered / masks.sum(axis=(1, 2))


def place(rng: np.random.Generator, shapes: list[tuple[int, int]]) -> list[tuple[int, int, int, int]] | None:
    """Half-open boxes for items of the given (h, w), in order, each at a uniformly random position
    such that no box is covered beyond MAX_COVERED; None when an item finds no such position."""
    boxes: list[tuple[int, int, int, int]] = []
    for height, width in shapes:
        for _ in range(PLACEMENT_TRIES):
            top = int(rng.integers(0, CANVAS - height + 1))
            left = int(rng.integers(0, CANVAS - width + 1))
            candidate = [*boxes, (top, left, top + height, left + width)]
            if covered_fractions(candidate).max() <= MAX_COVERED:
                boxes = candidate
                break
        else:
            return None
    return boxes


def compose(rng: np.random.Generator, items: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """One canvas from uint8 [28, 28] items, pasted in the given order (the first at the bottom).

    Every item gets the same draws: longer side in ITEM_SIDES, gain in
    ITEM_GAIN, a position allowed by `place`. Returns uint8 [CANVAS, CANVAS, 1]
    and each item's half-open pixel box (the extent of its pasted crop).
    Raises ValueError when CANVAS_TRIES draws find no placement.
    """
    for _ in range(CANVAS_TRIES):
        crops = [item_crop(item, int(rng.integers(ITEM_SIDES[0], ITEM_SIDES[1] + 1))) for item in items]
        boxes = place(rng, [crop.shape for crop in crops])
        if boxes is not None:
            break
    else:
        raise ValueError(f"{len(items)} items of sides {ITEM_SIDES} do not fit a {CANVAS}x{CANVAS} canvas "
                         f"with at most {MAX_COVERED} of each box covered")
    canvas = np.zeros((CANVAS, CANVAS), np.float32)
    for crop, (y0, x0, y1, x1) in zip(crops, boxes):
        alpha = np.clip(crop / ALPHA_LEVEL, 0.0, 1.0)
        region = canvas[y0:y1, x0:x1]
        region += alpha * (crop * rng.uniform(*ITEM_GAIN) - region)
    canvas += rng.normal(0.0, NOISE_STD, canvas.shape).astype(np.float32)
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8)[..., None], boxes


def split_pool(split: str, num_items: int, seed: int) -> np.ndarray:
    """Indices into the Fashion-MNIST split that feeds `split` of this benchmark (disjoint for
    train and validation, which share Fashion-MNIST's train images)."""
    if split == "test":
        return np.arange(num_items)
    order = np.random.default_rng([seed, 99]).permutation(num_items)
    cut = round(VALIDATION_SHARE * num_items)
    return np.sort(order[:cut] if split == "validation" else order[cut:])


def source_split(split: str) -> str:
    """The Fashion-MNIST split whose images feed `split`."""
    return "test" if split == "test" else "train"


def generate(split: str, images: np.ndarray, labels: np.ndarray, num: int, seed: int) -> Iterator[dict]:
    """`num` examples of `split` from its source Fashion-MNIST images [N, 28, 28] and labels [N].

    Raises ValueError when the pool has fewer target items than `num`.
    """
    pool = split_pool(split, len(images), seed)
    pool_labels = labels[pool]
    targets = pool[np.isin(pool_labels, TARGET_CLASSES)]
    distractors = pool[np.isin(pool_labels, DISTRACTOR_CLASSES)]
    if num > len(targets):
        raise ValueError(f"{split}: asked for {num} examples, its pool has {len(targets)} target items")
    split_id = _SPLIT_IDS[split]
    chosen = np.random.default_rng([seed, split_id]).permutation(targets)[:num]
    for key, target in enumerate(chosen):
        rng = np.random.default_rng([seed, split_id, key])
        count = int(rng.integers(DISTRACTORS[0], DISTRACTORS[1] + 1))
        members = [int(target), *(int(i) for i in rng.choice(distractors, size=count))]
        layers = rng.permutation(len(members))
        ordered = [members[i] for i in layers]
        image, boxes = compose(rng, [images[i] for i in ordered])
        target_layer = int(np.flatnonzero(layers == 0)[0])
        yield {
            "image": image,
            "label": TARGET_CLASSES.index(int(labels[target])),
            "bbox": normalised_box(boxes[target_layer]),
            "item_bbox": [normalised_box(b) for b in boxes],
            "item_class": [int(labels[i]) for i in ordered],
            "target_layer": target_layer,
        }


class TargetFashionMNIST(CanvasBenchmark, skip_registration=True):
    """The benchmark as a tfds dataset; splits train, validation and test.

    `sizes` sets the examples per split (default 20,000 / 5,000 / 5,000).
    The sizes and seed are part of what is written: prepare different
    settings into different data_dirs.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "64x64 canvas, 1 target + 2-4 distractors, longer side 16-32 px, gain 0.6-1.0, "
                              "box coverage <= 0.25, noise std 10."}
    name = NAME
    DEFAULT_SIZES = DEFAULT_SIZES

    def _info(self) -> tfds.core.DatasetInfo:
        return self._canvas_info(
            __doc__, CANVAS, [CLASS_NAMES[c] for c in TARGET_CLASSES],
            item_bbox=tfds.features.Sequence(tfds.features.BBoxFeature()),
            item_class=tfds.features.Sequence(tfds.features.ClassLabel(names=CLASS_NAMES)),
            target_layer=tfds.features.Scalar(dtype=np.int32),
        )

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
        images_file, labels_file = SPLIT_FILES[source_split(split)]
        images = read_idx(os.path.join(self._source_dir, images_file))
        labels = read_idx(os.path.join(self._source_dir, labels_file))
        for key, example in enumerate(generate(split, images, labels, self._sizes[split], self._seed)):
            yield key, {**example, "image": png(example["image"])}
