"""PNG grids of what a trained SAOL model looks at.

    python -m saol_jax.commands.visualize --workdir DIR [--out DIR] [--num_images 8]

Grids from the first eval images:
- `attention_grid.png`: per image, the input, the attention map A overlaid,
  and the predicted class's spatial probability Y[pred] overlaid;
- `cutmix_grid.png`: the same images with a box pasted from the next image
  (box drawn), the attention, the spatial probability of each image's
  class, and the cells where the pasted class wins;
- `localisation_grid.png`, only when the eval split has true boxes (a
  top-level `bbox` feature): per image, the input, then the maps that
  `saol_jax.core.localisation` scores: SAOL's attention, SAOL's spatial map of the
  true class and the GAP-FC branch's CAM of the true class (the maps
  GT-known localisation scores), each min-max scaled, with the true box
  (solid) and the box the WSOL threshold rule derives from the map at
  threshold `localisation.DEFAULT_THRESHOLD` (dashed) and their IoU;
- `vit_attention_grid.png`, only when the backbone is a Vision Transformer:
  per image, the input, SAOL's attention (with a SAOL head) and the ViT's own
  attention rollout (saol_jax.core.rollout: the class token's row with
  `pool='token'`, the patch tokens' mean row with `pool='avg'`), both at the
  patch grid and scaled to their maximum, with the true box where the split has one.
The first two need a SAOL head; a GAP-FC model (model.head == 'gap') gets
the localisation grid with the input and the CAM, and on a ViT the ViT grid
without SAOL's column.
Overlays show the Ho x Wo output cells as blocks over the image.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from absl import flags
from flax import nnx

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from saol_jax import data  # noqa: E402
from saol_jax.commands import cli  # noqa: E402
from saol_jax.core import cutmix, cutmix_eval, localisation, paths, rollout  # noqa: E402
from saol_jax.core.restore import (  # noqa: E402
    RestoredModel, class_names, load_trained, model_inputs, output_path, use_run_devices)
from saol_jax.models.vit import VisionTransformer  # noqa: E402

BOX_SEED = 0
BOX_BETA = 2.0  # boxes of about half the image most of the time
PANEL_INCHES = 2.2
LOCALISATION_MAPS = ("attention", "spatial", "cam")  # the localisation grid's columns after the image
MAP_TITLES = {"attention": "attention", "spatial": "spatial", "cam": "GAP-FC CAM"}


@dataclasses.dataclass
class Maps:
    """Host copies of one batch's images, true boxes and model outputs."""

    images: np.ndarray  # [B, H, W, C] uint8
    labels: np.ndarray  # [B]
    boxes: np.ndarray | None  # [B, 4] normalised true boxes (ymin, xmin, ymax, xmax), None without
    outputs: dict[str, np.ndarray]  # saol_jax.core.restore.RestoredModel's outputs: SAOL's (if any), `gap_logits`, `cam`
    rollout: np.ndarray | None = None  # [B, Ho, Wo] a ViT backbone's attention rollout map, None for others

    @property
    def has_saol(self) -> bool:
        return "log_attention" in self.outputs

    @property
    def attention(self) -> np.ndarray:
        """[B, Ho, Wo] SAOL's attention A."""
        return np.exp(self.outputs["log_attention"])

    @property
    def spatial(self) -> np.ndarray:
        """[B, Ho, Wo, K] SAOL's spatial probabilities Y."""
        return np.exp(self.outputs["log_spatial"])

    @property
    def probs(self) -> np.ndarray:
        """[B, K] the model's output probabilities: SAOL's, or GAP-FC's without a SAOL head."""
        if self.has_saol:
            return np.exp(self.outputs["log_probs"])
        return np.asarray(jax.nn.softmax(self.outputs["gap_logits"], axis=-1))

    def cell_map(self, kind: str) -> np.ndarray:
        """[B, Ho, Wo] the map `kind` of the true class, as saol_jax.core.localisation scores it."""
        return np.asarray(localisation.cell_maps(self.outputs, kind, jnp.asarray(self.labels)))


def eval_images(trained: RestoredModel, num_images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The first `num_images` eval images (uint8 [N, H, W, C]), labels [N] and true boxes [N, 4] (or None)."""
    batch = next(data.eval_batches(trained.config.dataset, global_batch_size=num_images,
                                   process_index=0, process_count=1))
    keep = batch["mask"].astype(bool)
    boxes = batch["bbox"][keep] if "bbox" in batch else None
    return batch["image"][keep], batch["label"][keep], boxes


def run_model(trained: RestoredModel, images: np.ndarray, labels: np.ndarray, boxes: np.ndarray | None = None) -> Maps:
    """The model's outputs on `images`, with the images, labels and true boxes."""
    outputs = jax.device_get(trained.forward(jnp.asarray(images)))
    return Maps(images=np.asarray(images), labels=np.asarray(labels), boxes=boxes, outputs=outputs)


def vit_rollout(trained: RestoredModel, images: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray | None:
    """[B, gh, gw] the attention rollout map of the ViT backbone on uint8 `images` [B, H, W, C], each
    summing to 1 (saol_jax.core.rollout); None when the backbone is not a VisionTransformer."""
    backbone = nnx.merge(trained.graphdef, trained.params, trained.batch_stats).backbone
    if not isinstance(backbone, VisionTransformer):
        return None
    weights = backbone.attention_weights(model_inputs(trained.config, jnp.asarray(images)))
    return np.asarray(rollout.rollout_map(rollout.attention_rollout(weights), prefix=backbone.num_prefix_tokens,
                                          grid_hw=grid_hw, pool=backbone.pool))


def threshold_boxes(cell_maps: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """[B, 4] normalised boxes the WSOL threshold rule of saol_jax.core.localisation derives from maps [B, Ho, Wo]."""
    heatmaps = np.asarray(localisation.upsample_normalised(jnp.asarray(cell_maps), image_hw))
    return np.stack([localisation.threshold_box(h, localisation.DEFAULT_THRESHOLD) for h in heatmaps])


def pixel_boxes(boxes: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """Normalised boxes [B, 4] -> int half-open pixel boxes (y0, x0, y1, x1), as `_draw_box` takes them."""
    return np.asarray(localisation.pixel_boxes(jnp.asarray(boxes), image_hw))


def paste_boxes(images: np.ndarray, key: jax.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pastes a box of image (b + 1) mod N into image b.

    Returns the mixed uint8 images, the partner index [N] and the int boxes
    [N, 4] (y0, x0, y1, x1), half-open pixel coordinates.
    """
    num, height, width = images.shape[:3]
    boxes, _ = cutmix.sample_boxes(key, num, (height, width), beta=BOX_BETA, prob=1.0)
    boxes = np.asarray(boxes)
    partner = (np.arange(num) + 1) % num
    mixed = images.copy()
    for b, (y0, x0, y1, x1) in enumerate(boxes):
        mixed[b, y0:y1, x0:x1] = images[partner[b], y0:y1, x0:x1]
    return mixed, partner, boxes


def _show_image(ax, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])


def _overlay(ax, image: np.ndarray, cell_map: np.ndarray, vmax: float, cmap: str = "jet", vmin: float = 0.0) -> None:
    """The image with a [Ho, Wo] map over it, each cell drawn over its share of the image."""
    _show_image(ax, image)
    height, width = image.shape[:2]
    ax.imshow(cell_map, cmap=cmap, alpha=0.5, vmin=vmin, vmax=vmax, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
              interpolation="nearest")


def _draw_box(ax, box: np.ndarray, linestyle: str = "-") -> None:
    y0, x0, y1, x1 = (float(v) for v in box)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=2,
                           linestyle=linestyle))


def _class_title(maps: Maps, b: int, names: list[str]) -> str:
    """Image b's true class and the model's predicted class with its probability."""
    probs = maps.probs[b]
    pred = int(np.argmax(probs))
    return f"true {names[maps.labels[b]]}\npred {names[pred]} ({probs[pred]:.2f})"


def _attention_row(axes, maps: Maps, b: int, names: list[str], title: str) -> None:
    """Image b titled `title`, its attention overlay and its predicted class's spatial probability."""
    pred = int(np.argmax(maps.probs[b]))
    image = maps.images[b]
    _show_image(axes[0], image)
    axes[0].set_title(title, fontsize=8)
    _overlay(axes[1], image, maps.attention[b], float(maps.attention[b].max()))
    axes[1].set_title(f"attention (max {maps.attention[b].max():.2f})", fontsize=8)
    _overlay(axes[2], image, maps.spatial[b, ..., pred], 1.0)
    axes[2].set_title(f"p({names[pred]}) per cell", fontsize=8)


def plain_grid(maps: Maps, names: list[str], path: str) -> str:
    """Input, attention overlay and predicted-class spatial probability per image."""
    num = len(maps.images)
    fig, axes = plt.subplots(num, 3, figsize=(3 * PANEL_INCHES, num * PANEL_INCHES), squeeze=False)
    for b in range(num):
        _attention_row(axes[b], maps, b, names, _class_title(maps, b, names))
    return _save(fig, path)


def attention_png(maps: Maps, b: int, names: list[str], path: str) -> str:
    """Image b's row of `plain_grid` alone (no true class needed: titled with the prediction); needs SAOL."""
    pred = int(np.argmax(maps.probs[b]))
    fig, axes = plt.subplots(1, 3, figsize=(3 * PANEL_INCHES, PANEL_INCHES), squeeze=False)
    _attention_row(axes[0], maps, b, names, f"pred {names[pred]} ({maps.probs[b, pred]:.2f})")
    return _save(fig, path)


def cutmix_grid(maps: Maps, boxes: np.ndarray, partner: np.ndarray, names: list[str], path: str) -> str:
    """Mixed input with its box, attention, both classes' spatial maps and the partner-wins cells."""
    num = len(maps.images)
    labels_b = maps.labels[partner]
    wins = np.asarray(cutmix_eval.partner_cells(
        jnp.asarray(maps.outputs["log_spatial"]), jnp.asarray(maps.labels), jnp.asarray(labels_b)))
    fig, axes = plt.subplots(num, 5, figsize=(5 * PANEL_INCHES, num * PANEL_INCHES), squeeze=False)
    for b in range(num):
        image, name_a, name_b = maps.images[b], names[maps.labels[b]], names[labels_b[b]]
        _show_image(axes[b, 0], image)
        axes[b, 0].set_title(f"{name_a} + box of {name_b}", fontsize=8)
        _overlay(axes[b, 1], image, maps.attention[b], float(maps.attention[b].max()))
        axes[b, 1].set_title("attention", fontsize=8)
        _overlay(axes[b, 2], image, maps.spatial[b, ..., maps.labels[b]], 1.0)
        axes[b, 2].set_title(f"p({name_a}) [outside]", fontsize=8)
        _overlay(axes[b, 3], image, maps.spatial[b, ..., labels_b[b]], 1.0)
        axes[b, 3].set_title(f"p({name_b}) [box]", fontsize=8)
        _overlay(axes[b, 4], image, wins[b].astype(np.float32), 1.0, cmap="coolwarm")
        axes[b, 4].set_title(f"cells where {name_b} > {name_a}", fontsize=8)
        for ax in axes[b]:
            _draw_box(ax, boxes[b])
    return _save(fig, path)


def localisation_grid(maps: Maps, names: list[str], path: str) -> str:
    """Input, then each map saol_jax.core.localisation scores, with the true and the thresholded box, per image.

    Columns after the input: attention, spatial, CAM (only the CAM without a
    SAOL head); each map is min-max scaled over its cells.
    """
    kinds = LOCALISATION_MAPS if maps.has_saol else ("cam",)
    num, image_hw = len(maps.images), maps.images.shape[1:3]
    fig, axes = _inputs_grid(maps, names, 1 + len(kinds))
    for col, kind in enumerate(kinds, start=1):
        cell_maps = maps.cell_map(kind)
        found = threshold_boxes(cell_maps, image_hw)
        found_pixels = pixel_boxes(found, image_hw)
        for b in range(num):
            ax = axes[b, col]
            _overlay(ax, maps.images[b], cell_maps[b], float(cell_maps[b].max()), vmin=float(cell_maps[b].min()))
            _draw_box(ax, found_pixels[b], linestyle="--")
            iou = localisation.box_iou(found[b], maps.boxes[b])
            ax.set_title(f"{MAP_TITLES[kind]} of {names[maps.labels[b]]}\nIoU {iou:.2f}", fontsize=8)
    _draw_true_boxes(axes, maps)
    return _save(fig, path)


def vit_attention_grid(maps: Maps, names: list[str], path: str) -> str:
    """Input, SAOL's attention (with a SAOL head) and the ViT's attention rollout per image.

    Both maps are at the patch grid, each scaled to its maximum; the true box
    is drawn on every panel when the split has boxes.
    """
    columns = [("attention", maps.attention)] if maps.has_saol else []
    columns.append(("rollout", maps.rollout))
    fig, axes = _inputs_grid(maps, names, 1 + len(columns))
    for b, row in enumerate(axes):
        for ax, (title, cell_maps) in zip(row[1:], columns):
            _overlay(ax, maps.images[b], cell_maps[b], float(cell_maps[b].max()))
            ax.set_title(f"{title} (max {cell_maps[b].max():.2f})", fontsize=8)
    if maps.boxes is not None:
        _draw_true_boxes(axes, maps)
    return _save(fig, path)


def _inputs_grid(maps: Maps, names: list[str], cols: int):
    """A figure of one row per image and `cols` panels a row, the first showing the input and its classes;
    returns (figure, axes [num, cols])."""
    num = len(maps.images)
    fig, axes = plt.subplots(num, cols, figsize=(cols * PANEL_INCHES, num * PANEL_INCHES), squeeze=False)
    for b in range(num):
        _show_image(axes[b, 0], maps.images[b])
        axes[b, 0].set_title(_class_title(maps, b, names), fontsize=8)
    return fig, axes


def _draw_true_boxes(axes, maps: Maps) -> None:
    """Each image's true box on every panel of its row."""
    for row, true_box in zip(axes, pixel_boxes(maps.boxes, maps.images.shape[1:3])):
        for ax in row:
            _draw_box(ax, true_box)


def _save(fig, path: str) -> str:
    fig.tight_layout()
    paths.save_figure(fig, path)
    plt.close(fig)
    return path


def write_grids(workdir: str, out_dir: str | None = None, *, num_images: int = 8) -> list[str]:
    """Writes the grids to `out_dir` (default `<workdir>/visualize`); returns the paths written.

    `attention_grid.png` and `cutmix_grid.png` with a SAOL head,
    `localisation_grid.png` when the eval batches carry true boxes,
    `vit_attention_grid.png` when the backbone is a Vision Transformer.
    """
    workdir = paths.resolve(workdir)
    out_dir = output_path(out_dir, workdir, "visualize")
    trained = load_trained(workdir)
    names = class_names(trained)
    images, labels, true_boxes = eval_images(trained, num_images)
    plain = run_model(trained, images, labels, true_boxes)
    plain.rollout = vit_rollout(trained, images, plain.outputs["cam"].shape[1:3])
    if not plain.has_saol and true_boxes is None and plain.rollout is None:
        raise ValueError("the model has no SAOL head (model.head == 'gap'), the dataset no true boxes and the "
                         "backbone is not a ViT: nothing to visualise")
    written = []
    if plain.has_saol:
        mixed_images, partner, boxes = paste_boxes(images, jax.random.key(BOX_SEED))
        mixed = run_model(trained, mixed_images, labels)
        written += [
            plain_grid(plain, names, paths.join(out_dir, "attention_grid.png")),
            cutmix_grid(mixed, boxes, partner, names, paths.join(out_dir, "cutmix_grid.png")),
        ]
    if true_boxes is not None:
        written.append(localisation_grid(plain, names, paths.join(out_dir, "localisation_grid.png")))
    if plain.rollout is not None:
        written.append(vit_attention_grid(plain, names, paths.join(out_dir, "vit_attention_grid.png")))
    return written


def define_flags() -> None:
    """Command-line flags; defined only when this module is the program."""
    cli.define_run_flags("Output folder (default WORKDIR/visualize).")
    flags.DEFINE_integer("num_images", 8, "Eval images shown, one row each.")


def main(argv: list[str]) -> None:
    args = cli.arguments(argv)
    use_run_devices(args.workdir)
    print("\n".join(write_grids(args.workdir, args.out, num_images=args.num_images)))


run = cli.program(main, define_flags)  # console script saol-visualize

if __name__ == "__main__":
    run()
