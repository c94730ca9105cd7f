"""PNG grids of what a trained SAOL model looks at.

    python -m saol_jax.visualize --workdir DIR [--out DIR] [--num_images 8]

Two grids from the first eval images:
- `attention_grid.png`: per image, the input, the attention map A overlaid,
  and the predicted class's spatial probability Y[pred] overlaid;
- `cutmix_grid.png`: the same images with a box pasted from the next image
  (box drawn), the attention, the spatial probability of each image's
  class, and the cells where the pasted class wins.
Overlays show the Ho x Wo output cells as blocks over the image.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from absl import app, flags

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from saol_jax import cutmix, cutmix_eval, data, paths, sharding  # noqa: E402
from saol_jax.config_check import parse_flags_or_exit  # noqa: E402
from saol_jax.restore import Trained, load_trained, read_config  # noqa: E402

BOX_SEED = 0
BOX_BETA = 2.0  # boxes of about half the image most of the time
PANEL_INCHES = 2.2


@dataclasses.dataclass
class Maps:
    """Host copies of one batch's images and SAOL outputs."""

    images: np.ndarray  # [B, H, W, C] uint8
    labels: np.ndarray  # [B]
    attention: np.ndarray  # [B, Ho, Wo]
    spatial: np.ndarray  # [B, Ho, Wo, K] probabilities
    probs: np.ndarray  # [B, K]


def eval_images(trained: Trained, num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `num_images` eval images (uint8 [N, H, W, C]) and labels [N]."""
    batch = next(data.eval_batches(trained.config.dataset, global_batch_size=num_images,
                                   process_index=0, process_count=1))
    keep = batch["mask"].astype(bool)
    return batch["image"][keep], batch["label"][keep]


def run_model(trained: Trained, images: np.ndarray, labels: np.ndarray) -> Maps:
    outputs = trained.forward(jnp.asarray(images))
    if "log_attention" not in outputs:
        raise ValueError("the model has no SAOL head (model.head == 'gap'): nothing to visualise")
    return Maps(
        images=np.asarray(images),
        labels=np.asarray(labels),
        attention=np.exp(np.asarray(outputs["log_attention"])),
        spatial=np.exp(np.asarray(outputs["log_spatial"])),
        probs=np.exp(np.asarray(outputs["log_probs"])),
    )


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


def _overlay(ax, image: np.ndarray, cell_map: np.ndarray, vmax: float, cmap: str = "jet") -> None:
    """The image with a [Ho, Wo] map over it, each cell drawn over its share of the image."""
    _show_image(ax, image)
    height, width = image.shape[:2]
    ax.imshow(cell_map, cmap=cmap, alpha=0.5, vmin=0.0, vmax=vmax, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
              interpolation="nearest")


def _draw_box(ax, box: np.ndarray) -> None:
    y0, x0, y1, x1 = (float(v) for v in box)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=2))


def plain_grid(maps: Maps, names: list[str], path: str) -> str:
    """Input, attention overlay and predicted-class spatial probability per image."""
    num = len(maps.images)
    fig, axes = plt.subplots(num, 3, figsize=(3 * PANEL_INCHES, num * PANEL_INCHES), squeeze=False)
    for b in range(num):
        pred = int(np.argmax(maps.probs[b]))
        image = maps.images[b]
        _show_image(axes[b, 0], image)
        axes[b, 0].set_title(f"true {names[maps.labels[b]]}\npred {names[pred]} ({maps.probs[b, pred]:.2f})",
                             fontsize=8)
        _overlay(axes[b, 1], image, maps.attention[b], float(maps.attention[b].max()))
        axes[b, 1].set_title(f"attention (max {maps.attention[b].max():.2f})", fontsize=8)
        _overlay(axes[b, 2], image, maps.spatial[b, ..., pred], 1.0)
        axes[b, 2].set_title(f"p({names[pred]}) per cell", fontsize=8)
    return _save(fig, path)


def cutmix_grid(maps: Maps, boxes: np.ndarray, partner: np.ndarray, names: list[str], path: str) -> str:
    """Mixed input with its box, attention, both classes' spatial maps and the partner-wins cells."""
    num = len(maps.images)
    labels_b = maps.labels[partner]
    wins = np.asarray(cutmix_eval.partner_cells(
        jnp.log(jnp.asarray(maps.spatial)), jnp.asarray(maps.labels), jnp.asarray(labels_b)))
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


def _save(fig, path: str) -> str:
    fig.tight_layout()
    paths.save_figure(fig, path)
    plt.close(fig)
    return path


def class_names(trained: Trained) -> list[str]:
    """The label feature's names from the tfds dataset info."""
    builder = data.open_builder(trained.config.dataset)
    _, label_key = data.feature_keys(builder, trained.config.dataset)
    return list(builder.info.features[label_key].names)


def write_grids(workdir: str, out_dir: str | None = None, *, num_images: int = 8) -> list[str]:
    """Writes `attention_grid.png` and `cutmix_grid.png` to `out_dir` (default `<workdir>/visualize`).

    Returns the paths written.
    """
    workdir = paths.resolve(workdir)
    out_dir = paths.resolve(out_dir) if out_dir else paths.join(workdir, "visualize")
    trained = load_trained(workdir)
    names = class_names(trained)
    images, labels = eval_images(trained, num_images)
    plain = run_model(trained, images, labels)
    mixed_images, partner, boxes = paste_boxes(images, jax.random.key(BOX_SEED))
    mixed = run_model(trained, mixed_images, labels)
    return [
        plain_grid(plain, names, paths.join(out_dir, "attention_grid.png")),
        cutmix_grid(mixed, boxes, partner, names, paths.join(out_dir, "cutmix_grid.png")),
    ]


def define_flags() -> None:
    """Command-line flags; defined only when this module is the program."""
    flags.DEFINE_string("workdir", None, "A training run's workdir.")
    flags.DEFINE_string("out", None, "Output folder (default WORKDIR/visualize).")
    flags.DEFINE_integer("num_images", 8, "Eval images shown, one row each.")
    flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    args = flags.FLAGS
    sharding.configure_cpu_devices(read_config(args.workdir).num_cpu_devices)
    print("\n".join(write_grids(args.workdir, args.out, num_images=args.num_images)))


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags_or_exit)
