"""Object localisation by a model's maps, scored against true boxes.

Maps, each [B, Ho, Wo] on the head's output grid (`cell_maps`), of a class c:
  attention  SAOL's attention A (one map, whatever c);
  spatial    SAOL's spatial probability Y_c;
  product    A * Y_c, each cell's share of the output probability of c;
  cam        the GAP-FC branch's class activation map of c.
Scores against the true box take c = the TRUE class (GT-known
localisation); top-1 localisation takes the predicted class and needs the
prediction right, so when it counts the two classes are the same map.

Scores of one image with true box b (normalised [ymin, xmin, ymax, xmax]):
  pointing    the map's maximum cell has its centre inside b;
  mass_ratio  the map's mass inside b divided by b's area share (1 for a
              uniform map); the map is made a distribution by subtracting
              its minimum and dividing by the sum, which treats a signed
              CAM with its bias and the probability maps alike;
  iou         IoU with b of the box around the thresholded map (the CAM /
              CutMix WSOL protocol: upsample bilinearly to the input size,
              min-max normalise, keep pixels >= threshold, take the largest
              4-connected component, bound it), at every threshold of
              SWEEP_THRESHOLDS;
  box accuracy  the share of images with iou >= an IoU level, per level of
              IOU_LEVELS and threshold; MaxBoxAccV2 (Choe et al., CVPR 2020)
              averages over the levels each level's accuracy at its
              operating threshold: the best one of the split itself, or one
              chosen on another (validation) split;
  top1_loc    iou >= 0.5 at the IoU-0.5 operating threshold and the
              predicted class right.

`pointing`, `mass_ratio` and `upsample_normalised` are pure jax (run inside
jit); `threshold_box`, `sweep_ious` and `box_iou` are numpy, because
connected components are found on the host. `box_scores`, `iou_sums` and
`sweep_figures` combine them for an evaluation loop: the sweep travels as
additive sums (`sweep_sums`), so batches, hosts and splits add up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from saol_jax.core.cutmix import cell_coverage

MAPS = ("attention", "spatial", "product", "cam")
SAOL_MAPS = ("attention", "spatial", "product")
IOU_THRESHOLD = 0.5  # the IoU level of GT-known and top-1 localisation
DEFAULT_THRESHOLD = 0.2  # the box a picture draws (saol_jax.commands.visualize); scores sweep every threshold
# MaxBoxAccV2 (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right",
# CVPR 2020): box accuracy at every map threshold of a sweep, at each of these IoU levels.
IOU_LEVELS = (0.3, 0.5, 0.7)
SWEEP_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(100))
PER_EXAMPLE = "per_example"  # key of the per-example values an eval step hands to `iou_sums`


# ------------------------------------------------------------------ maps (device)


def cell_maps(outputs: Mapping[str, jax.Array], kind: str, classes: jax.Array) -> jax.Array:
    """[B, Ho, Wo] map `kind` (one of MAPS) for the given classes [B].

    `outputs` holds the model outputs the map needs: `log_attention`,
    `log_spatial` (SAOL) and `cam` [B, Ho, Wo, K] (GAP-FC).
    """
    if kind == "attention":
        return jnp.exp(outputs["log_attention"])
    if kind == "cam":
        return _take_class(outputs["cam"], classes)
    spatial = jnp.exp(_take_class(outputs["log_spatial"], classes))
    if kind == "spatial":
        return spatial
    if kind == "product":
        return jnp.exp(outputs["log_attention"]) * spatial
    raise ValueError(f"map must be one of {MAPS}, got {kind!r}")


def _take_class(per_class: jax.Array, classes: jax.Array) -> jax.Array:
    """[B, Ho, Wo, K], [B] -> [B, Ho, Wo]."""
    return jnp.take_along_axis(per_class, classes[:, None, None, None], axis=-1)[..., 0]


def pixel_boxes(boxes: jax.Array, image_hw: tuple[int, int]) -> jax.Array:
    """Normalised boxes [B, 4] -> int32 half-open pixel boxes (y0, x0, y1, x1), edges rounded."""
    scale = jnp.asarray([image_hw[0], image_hw[1], image_hw[0], image_hw[1]], jnp.float32)
    return jnp.round(boxes.astype(jnp.float32) * scale).astype(jnp.int32)


def pointing(maps: jax.Array, boxes: jax.Array) -> jax.Array:
    """[B] bool: the centre of the highest cell of maps [B, Ho, Wo] lies inside boxes [B, 4] (normalised).

    Ties go to the first cell in row-major order.
    """
    batch, grid_h, grid_w = maps.shape
    flat = jnp.argmax(maps.reshape(batch, grid_h * grid_w), axis=-1)
    cy = (flat // grid_w + 0.5) / grid_h
    cx = (flat % grid_w + 0.5) / grid_w
    return (boxes[:, 0] <= cy) & (cy < boxes[:, 2]) & (boxes[:, 1] <= cx) & (cx < boxes[:, 3])


def as_distribution(maps: jax.Array) -> jax.Array:
    """[B, Ho, Wo] -> map minus its minimum, divided by its sum (uniform where the map is constant)."""
    shifted = maps.astype(jnp.float32) - maps.min(axis=(1, 2), keepdims=True).astype(jnp.float32)
    total = shifted.sum(axis=(1, 2), keepdims=True)
    uniform = jnp.full_like(shifted, 1.0 / (maps.shape[1] * maps.shape[2]))
    return jnp.where(total > 0, shifted / jnp.where(total > 0, total, 1.0), uniform)


def mass_ratio(maps: jax.Array, boxes: jax.Array, image_hw: tuple[int, int]) -> jax.Array:
    """[B] float32: mass of `as_distribution(maps)` inside the box / the box's area share.

    Args:
      maps: [B, Ho, Wo]; boxes: [B, 4] normalised; image_hw: the input size,
        at whose pixels the box edges are rounded before each cell's covered
        fraction is computed exactly (`saol_jax.core.cutmix.cell_coverage`).
    Returns:
      The ratio, 0 for an empty box.
    """
    coverage = cell_coverage(pixel_boxes(boxes, image_hw), image_hw, maps.shape[1:])
    mass = jnp.sum(as_distribution(maps) * coverage, axis=(1, 2))
    area = jnp.mean(coverage, axis=(1, 2))
    return jnp.where(area > 0, mass / jnp.where(area > 0, area, 1.0), 0.0)


def upsample_normalised(maps: jax.Array, image_hw: tuple[int, int]) -> jax.Array:
    """[B, Ho, Wo] -> [B, H, W] bilinear upsampling, min-max normalised to [0, 1] per image.

    A constant map becomes all ones (every pixel is as likely as any other).
    """
    up = jax.image.resize(maps.astype(jnp.float32), (maps.shape[0], *image_hw), method="bilinear")
    low = up.min(axis=(1, 2), keepdims=True)
    span = up.max(axis=(1, 2), keepdims=True) - low
    return jnp.where(span > 0, (up - low) / jnp.where(span > 0, span, 1.0), 1.0)


# ------------------------------------------------------------------ boxes (host)


def threshold_box(heatmap: np.ndarray, threshold: float, component: str = "largest") -> np.ndarray:
    """Normalised box [ymin, xmin, ymax, xmax] around the pixels of `heatmap` [H, W] >= threshold.

    `heatmap` is min-max normalised (its maximum is 1, so the set is never
    empty for threshold <= 1); `component='largest'` keeps only the largest
    4-connected component, 'all' every pixel. The box spans whole pixels:
    [y0 / H, (y1 + 1) / H).
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
    return float(box_ious(np.asarray(box)[None], gt_boxes)[0])


def box_ious(boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """[T] largest IoU of each normalised box of boxes [T, 4] with the ground-truth boxes [N, 4] (or [4])."""
    boxes = np.asarray(boxes, np.float64)[:, None]
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(1, -1, 4)
    top = np.maximum(boxes[..., 0], gt_boxes[..., 0])
    left = np.maximum(boxes[..., 1], gt_boxes[..., 1])
    bottom = np.minimum(boxes[..., 2], gt_boxes[..., 2])
    right = np.minimum(boxes[..., 3], gt_boxes[..., 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    gt_area = (gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1])
    union = area + gt_area - inter
    return np.max(np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0), axis=-1)


# 4-connectivity inside each slice of a [T, H, W] stack, none across slices.
_SLICE_CROSS = np.zeros((3, 3, 3), bool)
_SLICE_CROSS[1] = scipy.ndimage.generate_binary_structure(2, 1)


def sweep_boxes(heatmap: np.ndarray, thresholds=SWEEP_THRESHOLDS, component: str = "largest") -> np.ndarray:
    """[T, 4] `threshold_box(heatmap, t, component)` for each threshold t, found at once.

    The T masks are labelled as one [T, H, W] stack (one scipy call instead
    of T); scipy numbers components in raster order, so each slice's labels
    form a run and the largest one (ties: the lowest label, as in
    `threshold_box`) is a segment maximum. An empty mask (a NaN map) gives
    the empty box [0, 0, 0, 0].
    """
    heatmap = np.asarray(heatmap)
    height, width = heatmap.shape
    masks = heatmap[None] >= np.asarray(thresholds, heatmap.dtype)[:, None, None]
    if component == "largest":
        labels = np.empty(masks.shape, np.intp)
        count = scipy.ndimage.label(masks, _SLICE_CROSS, output=labels)
        last = np.maximum.accumulate(labels.reshape(len(masks), -1).max(axis=1))
        first = np.concatenate([[0], last[:-1]]) + 1
        present = last >= first
        # key orders components by size, then by lowest label: the segment maximum is the one kept.
        key = np.bincount(labels[masks], minlength=count + 1) * (count + 1) - np.arange(count + 1)
        largest = np.zeros(len(masks), np.intp)
        if present.any():
            largest[present] = count + 1 - np.maximum.reduceat(key[1:], first[present] - 1) % (count + 1)
        masks = (labels == largest[:, None, None]) & masks
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    boxes = np.stack([rows.argmax(axis=1) / height, cols.argmax(axis=1) / width,
                      (height - rows[:, ::-1].argmax(axis=1)) / height,
                      (width - cols[:, ::-1].argmax(axis=1)) / width], axis=-1)
    return np.where(rows.any(axis=1)[:, None], boxes, 0.0)


def sweep_ious(
    heatmap: np.ndarray, gt_boxes: np.ndarray, thresholds=SWEEP_THRESHOLDS, component: str = "largest"
) -> np.ndarray:
    """[T] IoU with `gt_boxes` of `threshold_box(heatmap, t)` for each threshold t of the sweep."""
    return box_ious(sweep_boxes(heatmap, thresholds, component), gt_boxes)


def sweep_ious_of(
    heatmaps: np.ndarray, gt_boxes: Sequence[np.ndarray], thresholds=SWEEP_THRESHOLDS, component: str = "largest"
) -> np.ndarray:
    """[N, T] `sweep_ious` of each heatmap of heatmaps [N, H, W] with its own true boxes."""
    rows = [sweep_ious(heatmap, boxes, thresholds, component) for heatmap, boxes in zip(heatmaps, gt_boxes)]
    return np.array(rows, np.float64).reshape(len(heatmaps), len(thresholds))


def box_hits(ious: np.ndarray, iou_levels=IOU_LEVELS) -> np.ndarray:
    """[..., T] IoUs -> [L, T] counts of boxes with IoU >= each level, summed over the leading axes."""
    ious = np.asarray(ious, np.float64).reshape(-1, np.shape(ious)[-1])
    return np.stack([(ious >= level).sum(axis=0) for level in iou_levels]).astype(np.float64)


def max_box_accuracy(accuracy: np.ndarray) -> tuple[np.ndarray, float]:
    """[L, T] box accuracy per IoU level and threshold -> (best per level [L], MaxBoxAccV2).

    MaxBoxAccV2 is the mean over the IoU levels of each level's best accuracy
    over the thresholds; each level takes its own best threshold.
    """
    best = np.asarray(accuracy, np.float64).max(axis=-1)
    return best, float(best.mean())


def operating_thresholds(accuracy: np.ndarray, thresholds=SWEEP_THRESHOLDS) -> np.ndarray:
    """[L, T] box accuracy (on validation data) -> [L] the threshold that maximises each level.

    Ties go to the lowest threshold. Apply the result to test data with
    `accuracy_at(test_accuracy, chosen, thresholds)`.
    """
    return np.asarray(thresholds, np.float64)[np.argmax(np.asarray(accuracy), axis=-1)]


def threshold_index(threshold: float, thresholds=SWEEP_THRESHOLDS) -> int:
    """The index of the sweep's threshold nearest `threshold` (one chosen on another split)."""
    return int(np.argmin(np.abs(np.asarray(thresholds) - threshold)))


def accuracy_at(accuracy: np.ndarray, chosen: np.ndarray, thresholds=SWEEP_THRESHOLDS) -> np.ndarray:
    """[L, T] box accuracy, [L] chosen thresholds -> [L] the accuracy of each level at its threshold."""
    index = [threshold_index(t, thresholds) for t in np.asarray(chosen)]
    return np.asarray(accuracy, np.float64)[np.arange(len(index)), index]


# ------------------------------------------------------------------ additive sums of a sweep

# Sums of one map over images (`sweep_sums`): boxes with IoU >= each level [L, T], those of them at
# IoU >= 0.5 whose prediction is right [T], and the IoUs [T], at each threshold of the sweep.
SWEEP_SUMS = ("sweep_hits", "sweep_top1", "sweep_iou")


def level_name(level: float) -> str:
    """IoU level -> its name in metric keys: 0.3 -> '30'."""
    return f"{round(100 * level):02d}"


def sweep_sums(ious: np.ndarray, correct: np.ndarray, iou_levels=IOU_LEVELS) -> dict[str, np.ndarray]:
    """Per-image IoUs [N, T] at the sweep's thresholds, whether each prediction is right [N] -> SWEEP_SUMS.

    `ious` are those of the true class's map. Top-1 localisation takes the
    predicted class's map, which is that same map whenever the prediction
    is right, and counts nothing otherwise: so it is the true class's hits
    among the right predictions.
    """
    ious = np.asarray(ious, np.float64).reshape(-1, np.shape(ious)[-1])
    correct = np.asarray(correct, bool).reshape(-1)
    return {
        "sweep_hits": box_hits(ious, iou_levels),
        "sweep_top1": box_hits(ious[correct], (IOU_THRESHOLD,))[0],
        "sweep_iou": ious.sum(axis=0),
    }


def sweep_figures(
    sums: Mapping[str, np.ndarray], count: float, chosen: np.ndarray | None = None,
    thresholds=SWEEP_THRESHOLDS, iou_levels=IOU_LEVELS,
) -> dict[str, float]:
    """A map's box scores over `count` images from its SWEEP_SUMS, at operating thresholds.

    Args:
      sums: the map's summed `sweep_sums`.
      count: the number of images summed.
      chosen: [L] operating threshold per IoU level, chosen on another split
        (`operating_thresholds`); None takes this split's own best.
    Returns:
      `maxboxacc_v2` (mean over the levels of the accuracy at each level's
      threshold), `maxboxacc_<level>` and `threshold_<level>` per level,
      `top1_loc` and the mean `iou`, both at the IoU-0.5 level's threshold.
    """
    accuracy = np.asarray(sums["sweep_hits"], np.float64) / max(count, 1.0)
    chosen = operating_thresholds(accuracy, thresholds) if chosen is None else np.asarray(chosen, np.float64)
    per_level = accuracy_at(accuracy, chosen, thresholds)
    at = threshold_index(chosen[list(iou_levels).index(IOU_THRESHOLD)], thresholds)
    figures = {"maxboxacc_v2": float(per_level.mean())}
    for level, value, threshold in zip(iou_levels, per_level, chosen):
        figures[f"maxboxacc_{level_name(level)}"] = float(value)
        figures[f"threshold_{level_name(level)}"] = float(threshold)
    figures["top1_loc"] = float(np.asarray(sums["sweep_top1"])[at]) / max(count, 1.0)
    figures["iou"] = float(np.asarray(sums["sweep_iou"])[at]) / max(count, 1.0)
    return figures


# ------------------------------------------------------------------ an eval loop's pieces


def box_scores(
    outputs: Mapping[str, jax.Array], labels: jax.Array, boxes: jax.Array, mask: jax.Array,
    image_hw: tuple[int, int],
) -> dict:
    """Localisation of every map the outputs allow, for one eval batch (jit-able).

    Every class map is taken at the TRUE class (pointing, mass ratio and
    the boxes); whether the prediction is right is that of SAOL for SAOL's
    maps, of the GAP-FC branch for the CAM (top-1 localisation).

    Args:
      outputs: model outputs with `cam` (and SAOL's, if any).
      labels: [B] int; boxes: [B, 4] normalised true boxes; mask: [B] bool,
        the examples to count.
    Returns:
      Masked sums `loc_<map>_pointing` and `loc_<map>_mass_ratio`, and under
      PER_EXAMPLE the values `iou_sums` needs on the host: `heatmap/<map>`
      [B, H, W], `correct/<map>` [B], `bbox` [B, 4] and `mask` [B].
    """
    weight = mask.astype(jnp.float32)
    predicted = {"cam": jnp.argmax(outputs["gap_logits"], axis=-1)}
    kinds = ["cam"]
    if "log_attention" in outputs:
        kinds = [*SAOL_MAPS, "cam"]
        predicted.update(dict.fromkeys(SAOL_MAPS, jnp.argmax(outputs["log_probs"], axis=-1)))
    sums = {}
    per_example = {"bbox": boxes.astype(jnp.float32), "mask": mask}
    for kind in kinds:
        maps = cell_maps(outputs, kind, labels)
        sums[f"loc_{kind}_pointing"] = jnp.sum(pointing(maps, boxes).astype(jnp.float32) * weight)
        sums[f"loc_{kind}_mass_ratio"] = jnp.sum(mass_ratio(maps, boxes, image_hw) * weight)
        per_example[f"heatmap/{kind}"] = upsample_normalised(maps, image_hw)
        per_example[f"correct/{kind}"] = predicted[kind] == labels
    sums[PER_EXAMPLE] = per_example
    return sums


def iou_sums(sums: Mapping, thresholds=SWEEP_THRESHOLDS, component: str = "largest") -> dict:
    """Host side of `box_scores`: replaces its PER_EXAMPLE values by masked sweep sums.

    Adds `loc_<map>_<sum>` for each of SWEEP_SUMS (arrays, see `sweep_sums`);
    the other entries of `sums` pass through. Sums without PER_EXAMPLE are
    returned unchanged.
    """
    sums = dict(sums)
    per_example = sums.pop(PER_EXAMPLE, None)
    if per_example is None:
        return sums
    keep = np.flatnonzero(np.asarray(per_example["mask"]))
    boxes = np.asarray(per_example["bbox"])
    for key, heatmaps in per_example.items():
        if not key.startswith("heatmap/"):
            continue
        kind = key.split("/", 1)[1]
        ious = sweep_ious_of(np.asarray(heatmaps)[keep], boxes[keep], thresholds, component)
        correct = np.asarray(per_example[f"correct/{kind}"])[keep]
        sums.update({f"loc_{kind}_{name}": value for name, value in sweep_sums(ious, correct).items()})
    return sums


def sweep_summary(
    totals: Mapping[str, np.ndarray | float], count: float, chosen: Mapping[str, np.ndarray] | None = None
) -> dict[str, float]:
    """`loc_<map>_<figure>` of `sweep_figures` for each map with sweep sums `loc_<map>_<sum>` in `totals`.

    `chosen` maps a map to its [L] operating thresholds from another split;
    maps not in it take this split's own best.
    """
    kinds = [kind for kind in MAPS if f"loc_{kind}_{SWEEP_SUMS[0]}" in totals]
    results = {}
    for kind in kinds:
        sums = {name: totals[f"loc_{kind}_{name}"] for name in SWEEP_SUMS}
        figures = sweep_figures(sums, count, (chosen or {}).get(kind))
        results.update({f"loc_{kind}_{name}": value for name, value in figures.items()})
    return results


def is_sweep_sum(name: str) -> bool:
    """Whether `name` is a `loc_<map>_<sum>` key of SWEEP_SUMS (an array, not a mean's numerator)."""
    return name.startswith("loc_") and name.endswith(SWEEP_SUMS)
