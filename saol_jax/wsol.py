"""Weakly supervised object localisation (WSOL) of a trained model on a tfds dataset with boxes.

    python -m saol_jax.wsol --workdir DIR --dataset caltech_birds2011 [--data_dir D] [--split test]
        [--map attention|spatial|cam] [--threshold 0.2] [--component largest|all] [--out FILE]

Protocol (that of CAM and CutMix on CUB-200-2011): each image is resized to
the model input (no crop, so normalised boxes keep their meaning); the
chosen map on the Ho x Wo output grid is upsampled bilinearly to the input
size and min-max normalised; pixels >= `threshold` are kept; the predicted
box bounds the largest 4-connected component of them (or all of them).
Top-1 localisation counts an image when the class is right AND the IoU with
a ground-truth box is >= 0.5; GT-known localisation ignores the class.

Maps: `attention` (SAOL's A), `spatial` (SAOL's Y for the predicted class),
`cam` (class activation map of the GAP-FC branch for the predicted class;
works for GAP-FC-only models too). The dataset needs (image, label)
supervised keys and a top-level box feature (`--bbox_key`, default `bbox`:
a tfds BBoxFeature, normalised [ymin, xmin, ymax, xmax], or a sequence of
them; with several boxes the best IoU counts).
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage
import tensorflow as tf
import tensorflow_datasets as tfds

from saol_jax import data, paths, sharding
from saol_jax.data import preprocess
from saol_jax.restore import Trained, load_trained, read_config

MAPS = ("attention", "spatial", "cam")
COMPONENTS = ("largest", "all")
IOU_THRESHOLD = 0.5


def predicted_class(outputs: Mapping[str, jax.Array], head: str) -> jax.Array:
    """[B] argmax class of the SAOL output (`head='saol'`) or of the GAP-FC logits ('gap')."""
    scores = outputs["log_probs"] if head == "saol" else outputs["gap_logits"]
    return jnp.argmax(scores, axis=-1)


def cell_maps(outputs: Mapping[str, jax.Array], kind: str, classes: jax.Array) -> jax.Array:
    """[B, Ho, Wo] localisation map of `kind` for the given classes [B]."""
    if kind == "attention":
        return jnp.exp(outputs["log_attention"])
    per_class = jnp.exp(outputs["log_spatial"]) if kind == "spatial" else outputs["cam"]
    return jnp.take_along_axis(per_class, classes[:, None, None, None], axis=-1)[..., 0]


def upsample_normalised(maps: jax.Array, image_hw: tuple[int, int]) -> jax.Array:
    """[B, Ho, Wo] -> [B, H, W] bilinear upsampling, min-max normalised to [0, 1] per image.

    A constant map becomes all ones (every pixel is as likely as any other).
    """
    up = jax.image.resize(maps.astype(jnp.float32), (maps.shape[0], *image_hw), method="bilinear")
    low = up.min(axis=(1, 2), keepdims=True)
    span = up.max(axis=(1, 2), keepdims=True) - low
    return jnp.where(span > 0, (up - low) / jnp.where(span > 0, span, 1.0), 1.0)


def threshold_box(heatmap: np.ndarray, threshold: float, component: str = "largest") -> np.ndarray:
    """Normalised box [ymin, xmin, ymax, xmax] around the pixels of `heatmap` [H, W] >= threshold.

    `heatmap` is min-max normalised (its maximum is 1, so the set is never
    empty for threshold <= 1); `component='largest'` keeps only the largest
    4-connected component. The box spans whole pixels: [y0 / H, (y1 + 1) / H).
    """
    mask = heatmap >= threshold
    if component == "largest":
        labels, count = scipy.ndimage.label(mask)
        if count > 1:
            sizes = np.bincount(labels.ravel())[1:]
            mask = labels == 1 + int(np.argmax(sizes))
    ys, xs = np.nonzero(mask)
    height, width = heatmap.shape
    return np.array([ys.min() / height, xs.min() / width, (ys.max() + 1) / height, (xs.max() + 1) / width])


def box_iou(box: np.ndarray, gt_boxes: np.ndarray) -> float:
    """Largest IoU between a normalised box [4] and the ground-truth boxes [N, 4] (or [4])."""
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    top = np.maximum(box[0], gt_boxes[:, 0])
    left = np.maximum(box[1], gt_boxes[:, 1])
    bottom = np.minimum(box[2], gt_boxes[:, 2])
    right = np.minimum(box[3], gt_boxes[:, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    gt_area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    union = area + gt_area - inter
    return float(np.max(np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)))


def examples(trained: Trained, split: str, bbox_key: str) -> Iterator[tuple[np.ndarray, int, np.ndarray]]:
    """(uint8 image at the model's input size, label, boxes [N, 4]) for each example of `split`."""
    builder = data.open_builder(trained.config.dataset)
    image_key, label_key = data.feature_keys(builder, trained.config.dataset)
    if bbox_key not in builder.info.features.keys():
        raise ValueError(f"{builder.name} has no {bbox_key!r} feature (features: {sorted(builder.info.features)})")
    size = trained.info.image_shape[:2]

    def prepare(example):
        image = preprocess.resize(example[image_key], size)
        return image, example[label_key], tf.reshape(tf.cast(example[bbox_key], tf.float32), (-1, 4))

    wanted = tfds.decode.PartialDecoding({image_key: True, label_key: True, bbox_key: True})
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=wanted)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
    for image, label, boxes in ds.as_numpy_iterator():
        yield image, int(label), boxes


def batches(stream: Iterator[tuple], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, list]]:
    """Batches of (images [b, H, W, C], labels [b], list of box arrays); the last may be short."""
    images, labels, boxes = [], [], []
    for image, label, box in stream:
        images.append(image)
        labels.append(label)
        boxes.append(box)
        if len(images) == batch_size:
            yield np.stack(images), np.array(labels), boxes
            images, labels, boxes = [], [], []
    if images:
        yield np.stack(images), np.array(labels), boxes


def evaluate(
    workdir: str,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    bbox_key: str = "bbox",
    kind: str = "attention",
    threshold: float = 0.2,
    component: str = "largest",
    head: str = "auto",
    batch_size: int = 64,
    max_examples: int = 0,
) -> dict[str, float]:
    """Top-1 / GT-known localisation accuracy, top-1 classification accuracy and mean IoU."""
    if kind not in MAPS or component not in COMPONENTS or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"need map in {MAPS}, component in {COMPONENTS}, 0 <= threshold <= 1; "
                         f"got {kind!r}, {component!r}, {threshold}")
    overrides = {k: v for k, v in (("name", dataset), ("data_dir", data_dir)) if v is not None}
    trained = load_trained(workdir, overrides)
    is_saol = trained.config.model.head == "saol"
    head = ("saol" if is_saol else "gap") if head == "auto" else head
    if (kind != "cam" or head == "saol") and not is_saol:
        raise ValueError(f"map {kind!r} with head {head!r} needs a SAOL model; use --map cam --head gap")
    split = split or trained.info.eval_split

    @jax.jit
    def heatmaps(params, batch_stats, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        outputs = trained.apply(params, batch_stats, images)
        pred = predicted_class(outputs, head)
        return pred, upsample_normalised(cell_maps(outputs, kind, pred), images.shape[1:3])

    totals = {"count": 0, "correct": 0, "gt_known": 0, "top1_loc": 0, "iou": 0.0}
    stream = examples(trained, split, bbox_key)
    if max_examples:
        stream = itertools.islice(stream, max_examples)
    for images, labels, boxes in batches(stream, batch_size):
        num = len(labels)
        padded = np.concatenate([images, np.repeat(images[-1:], batch_size - num, axis=0)])
        pred, heat = jax.device_get(heatmaps(trained.params, trained.batch_stats, jnp.asarray(padded)))
        for b in range(num):
            iou = box_iou(threshold_box(heat[b], threshold, component), boxes[b])
            correct = int(pred[b] == labels[b])
            totals["count"] += 1
            totals["correct"] += correct
            totals["gt_known"] += int(iou >= IOU_THRESHOLD)
            totals["top1_loc"] += int(iou >= IOU_THRESHOLD and correct)
            totals["iou"] += iou
    count = max(totals["count"], 1)
    return {
        "dataset": trained.config.dataset.name,
        "split": split,
        "map": kind,
        "head": head,
        "threshold": threshold,
        "component": component,
        "count": totals["count"],
        "top1_loc": totals["top1_loc"] / count,
        "gt_known_loc": totals["gt_known"] / count,
        "top1_cls": totals["correct"] / count,
        "mean_iou": totals["iou"] / count,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a training run's workdir")
    parser.add_argument("--dataset", default=None, help="tfds name (default: the run's dataset)")
    parser.add_argument("--data_dir", default=None, help="tfds data_dir (default: the run's)")
    parser.add_argument("--split", default=None, help="default: the run's eval split")
    parser.add_argument("--bbox_key", default="bbox")
    parser.add_argument("--map", dest="kind", default="attention", choices=MAPS)
    parser.add_argument("--threshold", type=float, default=0.2, help="fraction of the map's range")
    parser.add_argument("--component", default="largest", choices=COMPONENTS)
    parser.add_argument("--head", default="auto", choices=("auto", "saol", "gap"),
                        help="output whose class is used (auto: SAOL when present)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_examples", type=int, default=0, help="0: the whole split")
    parser.add_argument("--out", default=None, help="JSON file (default WORKDIR/wsol_<map>.json)")
    args = parser.parse_args(argv)
    sharding.configure_cpu_devices(read_config(args.workdir).num_cpu_devices)
    results = evaluate(
        args.workdir, dataset=args.dataset, data_dir=args.data_dir, split=args.split, bbox_key=args.bbox_key,
        kind=args.kind, threshold=args.threshold, component=args.component, head=args.head,
        batch_size=args.batch_size, max_examples=args.max_examples,
    )
    out = paths.resolve(args.out) if args.out else paths.join(paths.resolve(args.workdir), f"wsol_{args.kind}.json")
    paths.write_json(out, results)
    print(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
