"""Weakly supervised object localisation (WSOL) of a trained model on a tfds dataset with boxes.

    python -m saol_jax.commands.wsol --workdir DIR --dataset caltech_birds2011 [--data_dir D] [--split test]
        [--threshold_split 'train[-5000:]'] [--map attention|spatial|product|cam]
        [--component largest|all] [--out FILE]

Protocol (Choe et al., "Evaluating Weakly Supervised Object Localization
Methods Right", CVPR 2020, with the box rule of CAM and CutMix): each image
is resized to the model input (no crop, so normalised boxes keep their
meaning); the map of the TRUE class on the Ho x Wo output grid is upsampled
bilinearly to the input size and min-max normalised; for every threshold of
`localisation.SWEEP_THRESHOLDS`, pixels >= it are kept and the predicted box
bounds the largest 4-connected component of them (or all of them). Box
accuracy at IoU level d is the share of images whose box has IoU >= d with a
ground-truth box.

The operating threshold of each IoU level (0.3, 0.5, 0.7) is the one with
the best box accuracy on the threshold split (`--threshold_split`, default
the run's `dataset.validation_split`); the scored split (`--split`, default
the run's eval split) is then measured at those thresholds: MaxBoxAccV2 is
the mean over the levels, GT-known localisation the accuracy at IoU 0.5, and
top-1 localisation counts an image when its box hits IoU 0.5 and the class
predicted by `--head` is right (the predicted class's map is then the true
class's). The scored split's own best thresholds are reported under
`oracle`, for reference only: choosing them on the split scored flatters
the result.

Maps: `attention` (SAOL's A, one map whatever the class), `spatial`
(SAOL's Y of the class), `product` (A times that Y), `cam` (the GAP-FC
branch's class activation map; works for GAP-FC-only models too). Besides
the boxes it reports pointing accuracy and the map's mass in the box over
the box's area share, of the true class's map (definitions in
`saol_jax.core.localisation`). The dataset needs (image, label) supervised keys
and a top-level box feature (`--bbox_key`, default `bbox`: a tfds
BBoxFeature, normalised [ymin, xmin, ymax, xmax], or a sequence of them;
with several boxes the best IoU counts).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from etils import epy
import tensorflow_datasets as tfds
from absl import flags

from saol_jax import data
from saol_jax.commands import cli
from saol_jax.core.localisation import (
    MAPS,
    SWEEP_THRESHOLDS,
    cell_maps,
    mass_ratio,
    operating_thresholds,
    pointing,
    sweep_figures,
    sweep_ious_of,
    sweep_sums,
    upsample_normalised,
)
from saol_jax.core.restore import RestoredModel, load_trained, output_path, read_config, use_run_devices
from saol_jax.data import preprocess

with epy.lazy_imports():  # TensorFlow only where tf.data runs
    import tensorflow as tf

COMPONENTS = ("largest", "all")


class ThresholdSplitError(ValueError):
    """No split to choose the operating thresholds on, or the scored split itself."""


def predicted_class(outputs: Mapping[str, jax.Array], head: str) -> jax.Array:
    """[B] argmax class of the SAOL output (`head='saol'`) or of the GAP-FC logits ('gap')."""
    scores = outputs["log_probs"] if head == "saol" else outputs["gap_logits"]
    return jnp.argmax(scores, axis=-1)


def examples(trained: RestoredModel, split: str, bbox_key: str) -> Iterator[tuple[np.ndarray, int, np.ndarray]]:
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


Sums = dict[str, "float | np.ndarray"]


def split_sums(
    trained: RestoredModel, scores: Callable[..., tuple], split: str, bbox_key: str, component: str, batch_size: int, max_examples: int,
) -> Sums:
    """Summed scores of one split: `count`, `correct`, `pointing`, `mass_ratio` and the map's
    `localisation.sweep_sums` (`scores` is the jitted forward of `score_wsol`)."""
    no_images = sweep_sums(np.zeros((0, len(SWEEP_THRESHOLDS))), np.zeros(0, bool))
    totals: Sums = {"count": 0.0, "correct": 0.0, "pointing": 0.0, "mass_ratio": 0.0, **no_images}
    stream = examples(trained, split, bbox_key)
    if max_examples:
        stream = itertools.islice(stream, max_examples)
    for images, labels, boxes in batches(stream, batch_size):
        num = len(labels)
        padded = np.concatenate([images, np.repeat(images[-1:], batch_size - num, axis=0)])
        padded_labels = np.concatenate([labels, np.repeat(labels[-1:], batch_size - num)])
        first_boxes = np.stack([b[0] for b in boxes] + [boxes[-1][0]] * (batch_size - num))
        pred, heat, points, ratios = jax.device_get(scores(
            trained.params, trained.batch_stats, jnp.asarray(padded), jnp.asarray(padded_labels),
            jnp.asarray(first_boxes)))
        ious = sweep_ious_of(heat[:num], boxes, SWEEP_THRESHOLDS, component)
        correct = pred[:num] == labels
        batch = {"count": num, "correct": correct.sum(), "pointing": points[:num].sum(),
                 "mass_ratio": ratios[:num].sum(), **sweep_sums(ious, correct)}
        totals = {name: totals[name] + np.asarray(value, np.float64) for name, value in batch.items()}
    return {name: float(v) if np.ndim(v) == 0 else v for name, v in totals.items()}


def report(tuning: Sums, scored: Sums) -> dict:
    """The scores of a split (`scored`) at the operating thresholds chosen on another (`tuning`).

    Returns `count`, `top1_cls`, `pointing`, `mass_ratio`, the
    `localisation.sweep_figures` at the chosen thresholds (`maxboxacc_v2`,
    `maxboxacc_<level>`, `threshold_<level>`, `top1_loc`, and the mean IoU as
    `mean_iou`), `gt_known_loc` (= `maxboxacc_50`), `threshold_count` (the
    tuning split's images), and `oracle`: the figures at the scored split's
    own best thresholds.
    """
    count = max(scored["count"], 1.0)
    chosen = operating_thresholds(tuning["sweep_hits"] / max(tuning["count"], 1.0), SWEEP_THRESHOLDS)

    def figures(thresholds):
        result = sweep_figures(scored, scored["count"], thresholds)
        result["mean_iou"] = result.pop("iou")
        return result

    headline = figures(chosen)
    return {
        "count": int(scored["count"]),
        "threshold_count": int(tuning["count"]),
        "top1_cls": scored["correct"] / count,
        "gt_known_loc": headline["maxboxacc_50"],
        **headline,
        "pointing": scored["pointing"] / count,
        "mass_ratio": scored["mass_ratio"] / count,
        "oracle": figures(None),
    }


def score_wsol(
    workdir: str,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    threshold_split: str | None = None,
    bbox_key: str = "bbox",
    kind: str = "attention",
    component: str = "largest",
    head: str = "auto",
    batch_size: int = 64,
    max_examples: int = 0,
) -> dict:
    """MaxBoxAccV2, GT-known and top-1 localisation, top-1 classification, mean IoU, pointing and mass
    ratio of one map on `split`, at the thresholds chosen on `threshold_split` (see `report`).

    Scores as in `saol_jax.core.localisation`; with several boxes per image the
    IoU takes the best box, pointing and mass ratio the first. Raises
    ThresholdSplitError without a threshold split (none given and no
    `dataset.validation_split` in the run's config, or `dataset` another
    dataset than the run's) or when it is `split`.
    """
    if kind not in MAPS or component not in COMPONENTS:
        raise ValueError(f"need map in {MAPS} and component in {COMPONENTS}; got {kind!r}, {component!r}")
    run_dataset = read_config(workdir).dataset
    if not threshold_split and dataset is not None and dataset != run_dataset.name:
        raise ThresholdSplitError(
            f"--dataset {dataset} is not the run's dataset ({run_dataset.name}), so its validation split does "
            "not apply: pass --threshold_split SPLIT (held-out data of that dataset, not the scored split)")
    threshold_split = threshold_split or run_dataset.get("validation_split")
    if not threshold_split:
        raise ThresholdSplitError(
            "no split to choose the box thresholds on: the run's config has no dataset.validation_split; "
            "pass --threshold_split SPLIT (held-out data, not the scored split)")
    overrides = {k: v for k, v in (("name", dataset), ("data_dir", data_dir)) if v is not None}
    trained = load_trained(workdir, overrides)
    is_saol = trained.config.model.head == "saol"
    head = ("saol" if is_saol else "gap") if head == "auto" else head
    if (kind != "cam" or head == "saol") and not is_saol:
        raise ValueError(f"map {kind!r} with head {head!r} needs a SAOL model; use --map cam --head gap")
    split = split or trained.info.eval_split
    if threshold_split == split:
        raise ThresholdSplitError(f"--threshold_split {threshold_split!r} is the scored --split; "
                                  "choose the thresholds on held-out data")

    @jax.jit
    def scores(params, batch_stats, images: jax.Array, labels: jax.Array, boxes: jax.Array):
        outputs = trained.apply(params, batch_stats, images)
        maps = cell_maps(outputs, kind, labels)
        hw = images.shape[1:3]
        return (predicted_class(outputs, head), upsample_normalised(maps, hw), pointing(maps, boxes),
                mass_ratio(maps, boxes, hw))

    def sums_of(name: str) -> Sums:
        return split_sums(trained, scores, name, bbox_key, component, batch_size, max_examples)

    return {
        "dataset": trained.config.dataset.name,
        "split": split,
        "threshold_split": threshold_split,
        "map": kind,
        "head": head,
        "component": component,
        **report(sums_of(threshold_split), sums_of(split)),
    }


def define_flags() -> None:
    """Command-line flags; defined only when this module is the program."""
    cli.define_run_flags("JSON file (default WORKDIR/wsol_<map>.json).")
    flags.DEFINE_string("dataset", None, "tfds name (default: the run's dataset).")
    flags.DEFINE_string("data_dir", None, "tfds data_dir (default: the run's).")
    flags.DEFINE_string("split", None, "Split to score (default: the run's eval split).")
    flags.DEFINE_string("threshold_split", None,
                        "Held-out split the operating thresholds are chosen on (default: the run's "
                        "dataset.validation_split).")
    flags.DEFINE_string("bbox_key", "bbox", "The dataset's box feature.")
    flags.DEFINE_enum("map", "attention", MAPS, "Map whose boxes are scored.")
    flags.DEFINE_enum("component", "largest", COMPONENTS, "Pixels the box bounds.")
    flags.DEFINE_enum("head", "auto", ["auto", "saol", "gap"],
                      "Output whose class is used (auto: SAOL when present).")
    flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")
    flags.DEFINE_integer("max_examples", 0, "Examples used of each split (0: all).")


def main(argv: list[str]) -> None:
    args = cli.arguments(argv)
    use_run_devices(args.workdir)
    try:
        results = score_wsol(
            args.workdir, dataset=args.dataset, data_dir=args.data_dir, split=args.split,
            threshold_split=args.threshold_split, bbox_key=args.bbox_key, kind=args.map,
            component=args.component, head=args.head, batch_size=args.batch_size, max_examples=args.max_examples,
        )
    except ThresholdSplitError as error:
        raise SystemExit(f"error: {error}") from None
    out = output_path(args.out, args.workdir, f"wsol_{args.map}.json")
    cli.write_report(out, results, json.dumps(results, indent=2))


run = cli.program(main, define_flags)  # console script saol-wsol

if __name__ == "__main__":
    run()
