"""Class-agnostic localisation baselines on a tfds dataset with boxes: what a benchmark gives away.

    python -m saol_jax.studies.baselines --dataset target_fashion_mnist [--data_dir D] [--split validation]
        [--tune_split validation] [--train_split train] [--grid 8] [--out FILE]

None of them knows the class; a benchmark where the class decides the
location keeps them all low. Scores follow `saol_jax.core.localisation`
(box accuracy at IoU 0.3 / 0.5 / 0.7 over the threshold sweep, MaxBoxAccV2
their mean):
  raw_image       the image (as a fraction of 255) >= t, a binary opening,
                  its largest 4-connected component's box;
  intensity_map   the image's mean intensity on a grid x grid map (the
                  model's output grid), through the project's pipeline
                  (bilinear upsampling, min-max normalisation, >= t,
                  largest component), with pointing and mass ratio;
  centred_box     a box of the train split's mean height and width at the
                  image centre (no threshold);
  random_item     the expected score of one of the image's item boxes
                  (`item_bbox`) picked uniformly at random, exact.
For the swept baselines each IoU level's threshold is chosen on
`--tune_split` and its accuracy there applied to `--split`
(`box_acc_at_tuned`, the honest figure for a test split) next to the
split's own best (`max_box_acc`). Chance top-1 is 1 / classes. The images
must share one size; several channels are averaged.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import scipy.ndimage
import tensorflow_datasets as tfds
from absl import flags

from saol_jax import data
from saol_jax.commands import cli
from saol_jax.core import paths
from saol_jax.core.localisation import (
    IOU_LEVELS,
    SWEEP_THRESHOLDS,
    accuracy_at,
    box_hits,
    box_iou,
    mass_ratio,
    max_box_accuracy,
    operating_thresholds,
    pointing,
    sweep_ious,
    threshold_index,
    upsample_normalised,
)

ITEM_BOXES = "item_bbox"


# ------------------------------------------------------------------ boxes of each baseline


def raw_image_box(image: np.ndarray, threshold: float) -> np.ndarray:
    """Normalised box around the largest 4-connected component of image [H, W] (in [0, 1]) >= threshold
    after a 3x3 binary opening; the whole image when nothing survives the opening."""
    mask = scipy.ndimage.binary_opening(image >= threshold, structure=np.ones((3, 3), bool))
    labels, count = scipy.ndimage.label(mask)
    height, width = image.shape
    if count == 0:
        return np.array([0.0, 0.0, 1.0, 1.0])
    sizes = np.bincount(labels.ravel())[1:]
    ys, xs = np.nonzero(labels == 1 + int(np.argmax(sizes)))
    return np.array([ys.min() / height, xs.min() / width, (ys.max() + 1) / height, (xs.max() + 1) / width])


def raw_image_ious(images: np.ndarray, boxes: np.ndarray, thresholds=SWEEP_THRESHOLDS) -> np.ndarray:
    """[N, T] IoU of `raw_image_box` at each threshold; images [N, H, W] uint8, boxes [N, 4]."""
    scaled = images.astype(np.float32) / 255.0
    return np.array([[box_iou(raw_image_box(image, t), box) for t in thresholds]
                     for image, box in zip(scaled, boxes)])


def intensity_maps(images: np.ndarray, grid: int) -> np.ndarray:
    """[N, H, W] -> [N, grid, grid] mean intensity of each cell; H and W must be multiples of grid."""
    num, height, width = images.shape
    if height % grid or width % grid:
        raise ValueError(f"images of {height}x{width} do not split into a {grid}x{grid} grid")
    cells = images.astype(np.float32).reshape(num, grid, height // grid, grid, width // grid)
    return cells.mean(axis=(2, 4))


def centred_box(height: float, width: float) -> np.ndarray:
    """Normalised box of the given normalised height and width at the image centre."""
    return np.array([0.5 - height / 2, 0.5 - width / 2, 0.5 + height / 2, 0.5 + width / 2])


def random_item_accuracy(item_boxes: list[np.ndarray], boxes: np.ndarray, iou_levels=IOU_LEVELS) -> np.ndarray:
    """[L] expected box accuracy of one item box [n_i, 4] per image picked uniformly; true boxes [N, 4]."""
    shares = [[np.mean([box_iou(item, box) >= level for item in items]) for level in iou_levels]
              for items, box in zip(item_boxes, boxes)]
    return np.mean(np.asarray(shares, np.float64), axis=0)


# ------------------------------------------------------------------ scores


def _by_level(values: np.ndarray) -> dict[str, float]:
    return {f"{level:g}": float(v) for level, v in zip(IOU_LEVELS, values)}


def sweep_report(ious: np.ndarray, tune_ious: np.ndarray, thresholds=SWEEP_THRESHOLDS) -> dict:
    """Scores of a swept baseline: IoUs [N, T] on the split, [M, T] on the tuning split.

    Returns each level's best accuracy on the split and MaxBoxAccV2, the
    thresholds chosen on the tuning split, the split's accuracy there, and
    its mean IoU at the threshold chosen for IoU 0.5.
    """
    accuracy = box_hits(ious) / len(ious)
    best, v2 = max_box_accuracy(accuracy)
    chosen = operating_thresholds(box_hits(tune_ious) / len(tune_ious), thresholds)
    at_tuned = accuracy_at(accuracy, chosen, thresholds)
    at_half = threshold_index(chosen[IOU_LEVELS.index(0.5)], thresholds)
    return {
        "max_box_acc": _by_level(best),
        "max_box_acc_v2": v2,
        "tuned_thresholds": _by_level(chosen),
        "box_acc_at_tuned": _by_level(at_tuned),
        "box_acc_v2_at_tuned": float(at_tuned.mean()),
        "mean_iou_at_tuned_0.5": float(ious[:, at_half].mean()),
    }


def fixed_report(accuracy: np.ndarray) -> dict:
    """Scores of a baseline without a threshold: accuracy [L] per IoU level and their mean."""
    return {"box_acc": _by_level(accuracy), "box_acc_v2": float(np.mean(accuracy))}


BASELINE_TITLES = {"raw_image": "raw image, largest bright component", "intensity_map": "intensity map, the pipeline",
                   "centred_box": "centred box of mean size", "random_item": "one item at random (expected)"}


def markdown(report: dict) -> str:
    """The baselines of one `score_baselines` report as a markdown table: box accuracy per IoU level and its
    mean (swept baselines at the thresholds chosen on the tuning split), pointing and mass ratio."""
    levels = [f"{level:g}" for level in IOU_LEVELS]
    lines = [f"Class-agnostic baselines, {report['dataset']} {report['split']} ({report['count']} images; "
             f"thresholds chosen on {report['tune_split']}; chance top-1 {report['chance_top1']:.2f}):", "",
             "| baseline | " + " | ".join(f"box acc @ IoU {level}" for level in levels)
             + " | mean (MaxBoxAccV2) | pointing | mass / area |",
             "|---" * (len(levels) + 4) + "|"]
    for name, title in BASELINE_TITLES.items():
        scores = report[name]
        by_level = scores.get("box_acc_at_tuned", scores.get("box_acc"))
        mean = scores.get("box_acc_v2_at_tuned", scores.get("box_acc_v2"))
        extra = [f"{scores[key]:.2f}" if key in scores else "n/a" for key in ("pointing", "mass_ratio")]
        lines.append(f"| {title} | " + " | ".join(f"{by_level[level]:.3f}" for level in levels)
                     + f" | {mean:.3f} | " + " | ".join(extra) + " |")
    return "\n".join(lines)


def intensity_ious(maps: np.ndarray, boxes: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """[N, T] sweep IoUs of cell maps [N, g, g] through `upsample_normalised`."""
    heatmaps = np.asarray(upsample_normalised(jnp.asarray(maps), image_hw))
    return np.stack([sweep_ious(heatmap, box) for heatmap, box in zip(heatmaps, boxes)])


# ------------------------------------------------------------------ the command


def read_split(builder: tfds.core.DatasetBuilder, split: str, keys: list[str]) -> dict[str, list[np.ndarray]]:
    """The features `keys` of every example of a split, one numpy array an example."""
    if split not in builder.info.splits:
        raise ValueError(f"{builder.name} has no split {split!r} (splits: {sorted(builder.info.splits)})")
    missing = [k for k in keys if k not in builder.info.features.keys()]
    if missing:
        raise ValueError(f"{builder.name} has no {missing} feature (features: {sorted(builder.info.features)})")
    decoders = tfds.decode.PartialDecoding(dict.fromkeys(keys, True))
    rows = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)))
    return {key: [np.asarray(row[key]) for row in rows] for key in keys}


def gray(images: list[np.ndarray]) -> np.ndarray:
    """Images [H, W, C] of one size -> uint8 [N, H, W], the channels averaged."""
    if len({image.shape for image in images}) > 1:
        raise ValueError("the split's images differ in size; the baselines need one size")
    return np.round(np.stack(images).astype(np.float32).mean(axis=-1)).astype(np.uint8)


def score_baselines(dataset: str, *, data_dir: str | None = None, split: str = "validation",
             tune_split: str = "validation", train_split: str = "train", grid: int = 8) -> dict:
    """Every baseline's scores on `split` of `dataset` (thresholds tuned on `tune_split`)."""
    config = data.default_dataset_config()
    config.update({"name": dataset, "data_dir": data_dir})
    builder = data.open_builder(config)
    image_key, label_key = data.feature_keys(builder, config)
    has_items = ITEM_BOXES in builder.info.features.keys()
    scored = read_split(builder, split, [image_key, "bbox", *([ITEM_BOXES] if has_items else [])])
    tune = scored if tune_split == split else read_split(builder, tune_split, [image_key, "bbox"])
    train_boxes = np.stack(read_split(builder, train_split, ["bbox"])["bbox"]).astype(np.float64)
    images, boxes = gray(scored[image_key]), np.stack(scored["bbox"]).astype(np.float64)
    tune_images, tune_boxes = gray(tune[image_key]), np.stack(tune["bbox"]).astype(np.float64)
    image_hw = images.shape[1:]

    maps = intensity_maps(images, grid)
    jmaps, jboxes = jnp.asarray(maps), jnp.asarray(boxes, jnp.float32)
    map_ious, raw_ious = intensity_ious(maps, boxes, image_hw), raw_image_ious(images, boxes)
    if tune is scored:
        tune_map_ious, tune_raw_ious = map_ious, raw_ious
    else:
        tune_map_ious = intensity_ious(intensity_maps(tune_images, grid), tune_boxes, image_hw)
        tune_raw_ious = raw_image_ious(tune_images, tune_boxes)
    intensity = sweep_report(map_ious, tune_map_ious)
    intensity["pointing"] = float(np.mean(pointing(jmaps, jboxes)))
    intensity["mass_ratio"] = float(np.mean(mass_ratio(jmaps, jboxes, image_hw)))
    raw = sweep_report(raw_ious, tune_raw_ious)

    mean_hw = (float(np.mean(train_boxes[:, 2] - train_boxes[:, 0])),
               float(np.mean(train_boxes[:, 3] - train_boxes[:, 1])))
    centre = centred_box(*mean_hw)
    centred_ious = np.array([box_iou(centre, box) for box in boxes])
    centred = fixed_report(np.array([np.mean(centred_ious >= level) for level in IOU_LEVELS]))
    inside = (boxes[:, 0] <= 0.5) & (0.5 < boxes[:, 2]) & (boxes[:, 1] <= 0.5) & (0.5 < boxes[:, 3])
    centred.update(mean_box_hw=list(mean_hw), pointing=float(np.mean(inside)))

    results = {
        "dataset": dataset, "split": split, "tune_split": tune_split, "train_split": train_split,
        "count": len(images), "grid": grid,
        "chance_top1": 1.0 / builder.info.features[label_key].num_classes,
        "raw_image": raw, "intensity_map": intensity, "centred_box": centred,
    }
    if has_items:
        item_boxes = [np.asarray(b, np.float64).reshape(-1, 4) for b in scored[ITEM_BOXES]]
        results["random_item"] = fixed_report(random_item_accuracy(item_boxes, boxes))
    return results


def define_flags() -> None:
    """Command-line flags; defined only when this module is the program."""
    flags.DEFINE_string("dataset", None, "tfds name of a dataset with a `bbox` feature.")
    flags.DEFINE_string("data_dir", None, "tfds data_dir (default: tfds default, TFDS_DATA_DIR).")
    flags.DEFINE_string("split", "validation", "Split to score.")
    flags.DEFINE_string("tune_split", "validation", "Split whose best thresholds are applied to --split.")
    flags.DEFINE_string("train_split", "train", "Split whose mean box size the centred box takes.")
    flags.DEFINE_integer("grid", 8, "Side of the intensity map's grid (the model's output grid).")
    flags.DEFINE_string("out", None, "JSON file (default: print only).")
    flags.mark_flag_as_required("dataset")


def main(argv: list[str]) -> None:
    args = cli.arguments(argv)
    if args.grid < 1:
        raise SystemExit(f"error: --grid must be positive, got {args.grid}")
    try:
        results = score_baselines(args.dataset, data_dir=args.data_dir, split=args.split, tune_split=args.tune_split,
                           train_split=args.train_split, grid=args.grid)
    except (ValueError, data.DatasetNotFoundError, data.DatasetFormatError) as error:
        raise SystemExit(f"error: {error}") from None
    print(json.dumps(results, indent=2))
    if args.out:
        paths.write_json(args.out, results)
        print(f"wrote {args.out}")


run = cli.program(main, define_flags)  # console script saol-baselines

if __name__ == "__main__":
    run()
