"""Classifies image files with a trained model: top-k classes, and optionally its maps as PNGs.

    python -m saol_jax.commands.predict --workdir DIR IMAGE_OR_DIR... [--top_k 5] [--maps MAPS_DIR]
        [--out FILE.json] [--step N] [--batch_size 32]

Each JPEG or PNG file (a directory stands for its *.jpg, *.jpeg and *.png
files, sorted by name) is decoded with the dataset's channel count (RGB and
grayscale are converted either way, alpha dropped) and brought to the
model's input size by the evaluation transform
(`saol_jax.data.transforms.eval_transform`: a resize, or with
`dataset.eval_resize` a resize of the shorter side and a centre crop). Per
image it gives the top-k classes (names from the dataset's label feature)
with the SAOL output's probabilities, and the GAP-FC branch's top-1 beside
them; a GAP-FC-only model (model.head == 'gap') gives GAP-FC probabilities.
Without --out it prints one JSON object per image (JSON lines); with --out
it writes them to one JSON file and prints a line per image. `--maps DIR`
writes a PNG per image: the model's input, SAOL's attention over it and the
spatial probability map of the top class (`saol_jax.commands.visualize`); a
GAP-FC-only model has no attention, so it writes none and says so.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
from etils import epy
from absl import app, flags

from saol_jax import data
from saol_jax.commands import cli, visualize
from saol_jax.core import paths
from saol_jax.core.restore import (
    NoCheckpointError, RestoredModel, UnknownStepError, class_names, load_trained, use_run_devices,
)
from saol_jax.data.transforms import eval_transform

with epy.lazy_imports():  # TensorFlow only where tf.data runs
    import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class UnreadableImageError(ValueError):
    """A path that is not an image file (or a folder of them) this command can decode."""


def image_files(inputs: Sequence[str]) -> list[str]:
    """The files named by `inputs`: files as given, each folder as its image files sorted by name."""
    files = []
    for path in inputs:
        if tf.io.gfile.isdir(path):
            found = sorted(name for name in tf.io.gfile.listdir(path) if name.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise UnreadableImageError(f"{path} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
            files += [paths.join(path, name) for name in found]
        elif tf.io.gfile.exists(path):
            files.append(path)
        else:
            raise UnreadableImageError(f"{path} does not exist")
    return files


def load_image(path: str, trained: RestoredModel) -> np.ndarray:
    """The file at `path` as the model's uint8 input [H, W, C], through the evaluation transform."""
    shape = trained.info.image_shape
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=shape[2], expand_animations=False)
    except tf.errors.OpError as error:
        message = (error.message or str(error)).strip().splitlines()[0]
        raise UnreadableImageError(f"cannot decode {path} as an image: {message}") from None
    transform = eval_transform(trained.config.dataset, tuple(image.shape), shape)
    return np.asarray(transform(image))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64."""
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _entry(probs: np.ndarray, k: int, names: Sequence[str]) -> dict:
    return {"class": int(k), "name": names[k], "prob": float(probs[k])}


def predictions(outputs: dict[str, np.ndarray], names: Sequence[str], top_k: int) -> list[dict]:
    """Per example of a batch of model outputs: `head` ('saol', or 'gap' without SAOL), `top_k` (the
    `top_k` most probable classes of that head, best first, each {'class', 'name', 'prob'}) and
    `gap_fc_top1` (the GAP-FC branch's best class)."""
    gap = softmax(outputs["gap_logits"])
    head, probs = ("saol", np.exp(np.asarray(outputs["log_probs"], np.float64))) if "log_probs" in outputs \
        else ("gap", gap)
    k = min(top_k, probs.shape[-1])
    result = []
    for b in range(probs.shape[0]):
        order = np.argsort(-probs[b], kind="stable")[:k]
        result.append({"head": head, "top_k": [_entry(probs[b], c, names) for c in order],
                       "gap_fc_top1": _entry(gap[b], int(np.argmax(gap[b])), names)})
    return result


def map_names(files: Sequence[str]) -> list[str]:
    """A distinct `<stem>.png` per file (`<stem>_2.png`, ... for repeated stems)."""
    seen: Counter[str] = Counter()
    names = []
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        seen[stem] += 1
        names.append(f"{stem}.png" if seen[stem] == 1 else f"{stem}_{seen[stem]}.png")
    return names


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict(trained: RestoredModel, files: Sequence[str], *, top_k: int = 5, maps_dir: str | None = None,
            batch_size: int = 32) -> list[dict]:
    """`predictions` for each file, with its `image` path (and `map`, the PNG written to `maps_dir`).

    Batches are padded to `batch_size`, so the forward pass compiles once.
    """
    names = class_names(trained)
    jobs = list(zip(files, map_names(files)))
    records = []
    for chunk in _chunks(jobs, batch_size):
        images = np.stack([load_image(path, trained) for path, _ in chunk])
        padded = np.concatenate([images, np.repeat(images[-1:], batch_size - len(chunk), axis=0)])
        maps = visualize.run_model(trained, padded, np.full(batch_size, -1))
        for b, ((path, png), record) in enumerate(zip(chunk, predictions(maps.outputs, names, top_k))):
            record = {"image": path, **record}
            if maps_dir and maps.has_saol:
                record["map"] = visualize.attention_png(maps, b, names, paths.join(maps_dir, png))
            records.append(record)
    return records


def line(record: dict) -> str:
    """One readable line: the image, its top classes with probabilities and GAP-FC's top-1."""
    tops = ", ".join(f"{e['name']} {e['prob']:.3f}" for e in record["top_k"])
    gap = record["gap_fc_top1"]
    return f"{record['image']}: {tops}  [{record['head']}; GAP-FC top-1 {gap['name']} {gap['prob']:.3f}]"


def define_flags() -> None:
    """Command-line flags; defined only when this module is the program."""
    cli.define_run_flags("JSON file for the predictions (default: JSON lines on stdout).")
    flags.DEFINE_integer("top_k", 5, "Classes listed per image.", lower_bound=1)
    flags.DEFINE_string("maps", None, "Folder for one PNG per image: attention and top-class spatial map.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
    flags.DEFINE_integer("batch_size", 32, "Images per forward pass.", lower_bound=1)


def main(argv: list[str]) -> None:
    args = flags.FLAGS
    if len(argv) < 2:
        raise app.UsageError("give at least one image file or folder of images")
    try:
        use_run_devices(args.workdir)
        files = image_files(argv[1:])
        trained = load_trained(args.workdir, step=args.step)
        if args.maps and trained.config.model.head != "saol":
            print(f"note: model.head == {trained.config.model.head!r}: the model has no attention, "
                  "so --maps writes no maps", file=sys.stderr)
        maps_dir = paths.resolve(args.maps) if args.maps else None
        records = predict(trained, files, top_k=args.top_k, maps_dir=maps_dir, batch_size=args.batch_size)
    except (FileNotFoundError, NoCheckpointError, UnknownStepError, UnreadableImageError,
            data.DatasetNotFoundError, data.DatasetFormatError) as error:
        raise SystemExit(f"error: {error}") from None
    if args.out is None:
        for record in records:
            print(json.dumps(record))
        return
    out = paths.resolve(args.out)
    paths.write_json(out, {"workdir": paths.resolve(args.workdir), "step": trained.step, "predictions": records})
    print("\n".join(line(record) for record in records))
    print(f"wrote {out}")


run = cli.program(main, define_flags)  # console script saol-predict

if __name__ == "__main__":
    run()
