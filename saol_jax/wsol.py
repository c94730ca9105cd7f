"""Weakly supervised object localisation (WSOL) of a trained model on a tfds dataset with boxes.

    python -m saol_jax.wsol --workdir DIR --dataset caltech_birds2011 [--data_dir D] [--split test]
        [--map attention|spatial|product|cam] [--threshold 0.2] [--component largest|all] [--out FILE]

Protocol (that of CAM and CutMix on CUB-200-2011): each image is resized to
the model input (no crop, so normalised boxes keep their meaning); the
chosen map on the Ho x Wo output grid is upsampled bilinearly to the input
size and min-max normalised; pixels >= `threshold` are kept; the predicted
box bounds the largest 4-connected component of them (or all of them).
Top-1 localisation counts an image when the class is right AND the IoU with
a ground-truth box is >= 0.5; GT-known localisation ignores the class.

Maps: `attention` (SAOL's A), `spatial` (SAOL's Y for the predicted class),
`product` (A times that Y), `cam` (class activation map of the GAP-FC
branch for the predicted class; works for GAP-FC-only models too). Besides
the box IoU it reports pointing accuracy and the map's mass in the box over
the box's area share (definitions in `saol_jax.localization`). The dataset needs (image, label)
supervised keys and a top-level box feature (`--bbox_key`, default `bbox`:
a tfds BBoxFeature, normalised [ymin, xmin, ymax, xmax], or a sequence of
them; with several boxes the best IoU counts).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from etils import epy
import tensorflow_datasets as tfds
from absl import app, flags

from saol_jax import data, paths
from saol_jax.config_check import parse_flags_or_exit
from saol_jax.data import preprocess
from saol_jax.localization import (
    DEFAULT_THRESHOLD,
    IOU_THRESHOLD,
    MAPS,
    box_iou,
    cell_maps,
    mass_ratio,
    pointing,
    threshold_box,
    upsample_normalised,
)
from saol_jax.restore import Trained, load_trained, output_path, use_run_devices

with epy.lazy_imports():  # TensorFlow only where tf.data runs
    import tensorflow as tf

COMPONENTS = ("largest", "all")


def predicted_class(outputs: Mapping[str, jax.Array], head: str) -> jax.Array:
    """[B] argmax class of the SAOL output (`head='saol'`) or of the GAP-FC logits ('gap')."""
    scores = outputs["log_probs"] if head == "saol" else outputs["gap_logits"]
    return jnp.argmax(scores, axis=-1)


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
    threshold: float = DEFAULT_THRESHOLD,
    component: str = "largest",
    head: str = "auto",
    batch_size: int = 64,
    max_examples: int = 0,
) -> dict[str, float]:
    """Top-1 / GT-known localisation, top-1 classification, mean IoU, pointing and mass ratio of one map.

    Scores as in `saol_jax.localization`; with several boxes per image the
    IoU takes the best box, pointing and mass ratio the first.
    """
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
    def scores(params, batch_stats, images: jax.Array, boxes: jax.Array):
        outputs = trained.apply(params, batch_stats, images)
        pred = predicted_class(outputs, head)
        maps = cell_maps(outputs, kind, pred)
        hw = images.shape[1:3]
        return pred, upsample_normalised(maps, hw), pointing(maps, boxes), mass_ratio(maps, boxes, hw)

    totals = {"count": 0, "correct": 0, "gt_known": 0, "top1_loc": 0, "iou": 0.0, "pointing": 0, "mass_ratio": 0.0}
    stream = examples(trained, split, bbox_key)
    if max_examples:
        stream = itertools.islice(stream, max_examples)
    for images, labels, boxes in batches(stream, batch_size):
        num = len(labels)
        padded = np.concatenate([images, np.repeat(images[-1:], batch_size - num, axis=0)])
        first_boxes = np.stack([b[0] for b in boxes] + [boxes[-1][0]] * (batch_size - num))
        pred, heat, points, ratios = jax.device_get(
            scores(trained.params, trained.batch_stats, jnp.asarray(padded), jnp.asarray(first_boxes)))
        for b in range(num):
            iou = box_iou(threshold_box(heat[b], threshold, component), boxes[b])
            correct = int(pred[b] == labels[b])
            totals["count"] += 1
            totals["correct"] += correct
            totals["gt_known"] += int(iou >= IOU_THRESHOLD)
            totals["top1_loc"] += int(iou >= IOU_THRESHOLD and correct)
            totals["iou"] += iou
            totals["pointing"] += int(points[b])
            totals["mass_ratio"] += float(ratios[b])
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
        "pointing": totals["pointing"] / count,
        "mass_ratio": totals["mass_ratio"] / count,
    }


def define_flags() -> None:
    """Command-line flags; defined only when this module is the program."""
    flags.DEFINE_string("workdir", None, "A training run's workdir.")
    flags.DEFINE_string("dataset", None, "tfds name (default: the run's dataset).")
    flags.DEFINE_string("data_dir", None, "tfds data_dir (default: the run's).")
    flags.DEFINE_string("split", None, "Split to score (default: the run's eval split).")
    flags.DEFINE_string("bbox_key", "bbox", "The dataset's box feature.")
    flags.DEFINE_enum("map", "attention", MAPS, "Map whose boxes are scored.")
    flags.DEFINE_float("threshold", DEFAULT_THRESHOLD, "Fraction of the map's range.")
    flags.DEFINE_enum("component", "largest", COMPONENTS, "Pixels the box bounds.")
    flags.DEFINE_enum("head", "auto", ["auto", "saol", "gap"],
                      "Output whose class is used (auto: SAOL when present).")
    flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")
    flags.DEFINE_integer("max_examples", 0, "Examples scored (0: the whole split).")
    flags.DEFINE_string("out", None, "JSON file (default WORKDIR/wsol_<map>.json).")
    flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    args = flags.FLAGS
    use_run_devices(args.workdir)
    results = evaluate(
        args.workdir, dataset=args.dataset, data_dir=args.data_dir, split=args.split, bbox_key=args.bbox_key,
        kind=args.map, threshold=args.threshold, component=args.component, head=args.head,
        batch_size=args.batch_size, max_examples=args.max_examples,
    )
    out = output_path(args.out, args.workdir, f"wsol_{args.map}.json")
    paths.write_json(out, results)
    print(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags_or_exit)
