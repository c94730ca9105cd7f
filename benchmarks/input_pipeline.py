"""Images per second per CPU core of the train transforms on both input backends (tf.data, grain).

    python -m benchmarks.input_pipeline [--threads 1,2] [--workers 0,1,2] [--images 512] [--seconds 8]
                                        [--stages] [--backends tfdata,grain] [--tiny] [--out PATH]

The benchmark writes two synthetic tfds datasets into a temporary directory:
photo-like JPEGs (quality 90, 500x375 or 375x500, smooth content with
sensor-like noise) for the ImageNet recipe and 32x32 PNGs for the CIFAR
recipes (in TFRecord where TensorFlow is installed, plus the ArrayRecord copy
grain reads), then times the recipes' train transforms
(configs/imagenet_resnet.py: 224², colour jitter 0.4, lighting 0.1;
configs/cifar_resnet110.py: pad-crop-flip):

tf.data (`dataset.backend='tfdata'`; encoded records, map with AUTOTUNE,
batches of 64, a private threadpool of N threads and intra-op parallelism 1,
so N is the number of cores it may use):
- `train_fused`: `preprocess.inception_train_jpeg`, which decodes only the
  random-resized-crop window (`tf.image.decode_and_crop_jpeg`);
- `train_decode_then_crop`: `tf.io.decode_jpeg`, then `preprocess.inception_train`;
- `eval`: `tf.io.decode_jpeg`, then `preprocess.resize_center_crop` (resize 256, centre 224);
- `cifar_train`: `tf.io.decode_png`, then `preprocess.cifar_train`;
- with `--stages`: `decode_only` (`tf.io.decode_jpeg` of the whole image) and
  `train_fused_no_colour` (the fused transform without colour jitter and lighting).

grain (`dataset.backend='grain'`; the library's own `host_train_batches`,
batches of 64): `grain_imagenet_train` (`grain_transforms.inception_train`:
reduced-scale JPEG decoding, fused crop and resize, colour in Pillow) and
`grain_cifar_train`, with `dataset.workers` = N worker processes; N = 0
builds the batches in the benchmark's own process, on one core.

"per core" divides by N (by 1 for grain's N = 0). "img per CPU s" divides by
the CPU time of the process and its worker processes instead: what the cores
delivered per second of their own time, which a loaded machine moves much
less than the wall-clock figures. The per-core goal is judged on it.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator

import numpy as np
import psutil
import tensorflow_datasets as tfds
from etils import epy
from PIL import Image

from benchmarks import default_out, machine, publish
from benchmarks.tables import input_pipeline_table
from configs import cifar_resnet110, imagenet_resnet
from saol_jax.data import host_train_batches, preprocess
from saol_jax.data.grain_source import add_array_record

with epy.lazy_imports():  # the tf.data half only
    import tensorflow as tf

TRAIN_PER_CORE_GOAL = 390.0  # img/s per core: 16 host cores feed one H200's ResNet-50 step (6,171 img/s)
SIZES = ((375, 500), (500, 375))
CIFAR_SIZE = (32, 32)
BATCH = 64
TRANSFORMS = ("train_fused", "train_decode_then_crop", "eval", "cifar_train")
STAGES = ("decode_only", "train_fused_no_colour")
GRAIN = ("grain_imagenet_train", "grain_cifar_train")


def synthetic_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Photo-like uint8 [height, width, 3]: smooth random colour fields plus fine noise."""
    coarse = rng.integers(0, 256, (max(height // 24, 1) + 2, max(width // 24, 1) + 2, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    return np.clip(image + rng.normal(0, 16, image.shape), 0, 255).astype(np.uint8)


def encoded(image: np.ndarray, image_format: str, quality: int = 90) -> bytes:
    """`image` as JPEG (about 100 KB at 500x375) or PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=image_format, **({"quality": quality} if image_format == "JPEG" else {}))
    return buffer.getvalue()


def write_dataset(data_dir: str, num_images: int, kind: str = "imagenet", seed: int = 0) -> tfds.core.DatasetBuilder:
    """Writes `num_images` synthetic images ('imagenet': JPEGs; 'cifar': 32x32 PNGs) as a one-split
    ('train') tfds dataset named `synthetic_<kind>`, with its ArrayRecord copy; returns its builder."""
    image_format, classes = ("JPEG", 1000) if kind == "imagenet" else ("PNG", 100)

    class Synthetic(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")
        name = f"synthetic_{kind}"

        def _info(self) -> tfds.core.DatasetInfo:
            shape = (None, None, 3) if kind == "imagenet" else (*CIFAR_SIZE, 3)
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=shape, encoding_format=image_format.lower()),
                    "label": tfds.features.ClassLabel(num_classes=classes),
                }),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            rng = np.random.default_rng(seed)
            for index in range(num_images):
                height, width = SIZES[index % len(SIZES)] if kind == "imagenet" else CIFAR_SIZE
                # Encoded bytes: tfds stores them as they are, without re-encoding.
                image = encoded(synthetic_image(rng, height, width), image_format)
                yield index, {"image": image, "label": int(rng.integers(classes))}

    file_format = "tfrecord" if importlib.util.find_spec("tensorflow") else "array_record"
    builder = Synthetic(data_dir=data_dir, file_format=file_format)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    add_array_record(builder)
    return builder


def transforms(stages: bool = False) -> dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]]:
    """(encoded image, seed [2]) -> uint8 image, per tf.data transform, with the recipes' settings."""
    d = imagenet_resnet.get_config().dataset
    size, jitter, lighting = d.image_size, d.color_jitter, d.lighting
    chosen = {
        "train_fused": lambda jpeg, seed: preprocess.inception_train_jpeg(jpeg, seed, size, jitter, lighting),
        "train_decode_then_crop": lambda jpeg, seed: preprocess.inception_train(
            tf.io.decode_jpeg(jpeg, channels=3), seed, size, jitter, lighting),
        "eval": lambda jpeg, seed: preprocess.resize_center_crop(tf.io.decode_jpeg(jpeg, channels=3), size),
        "cifar_train": lambda png, seed: preprocess.cifar_train(tf.io.decode_png(png, channels=3), seed),
    }
    if stages:
        chosen["decode_only"] = lambda jpeg, seed: tf.io.decode_jpeg(jpeg, channels=3)
        chosen["train_fused_no_colour"] = lambda jpeg, seed: preprocess.inception_train_jpeg(jpeg, seed, size)
    return chosen


def batches(builder: tfds.core.DatasetBuilder, transform: Callable, threads: int) -> tf.data.Dataset:
    """Endless batches of transformed images read from the dataset's files, on `threads` threads.

    Images of different sizes (`decode_only`) are batched ragged.
    """
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = True
    ds = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(try_autocache=False, options=options))
    ds = ds.repeat().enumerate()

    def example(index, record):
        seed = tf.stack([tf.constant(0, tf.int64), index])
        return {"image": transform(record["image"], seed), "label": tf.cast(record["label"], tf.int32)}

    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.ragged_batch(BATCH) if ds.element_spec["image"].shape[0] is None else ds.batch(BATCH)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def grain_batches(builder: tfds.core.DatasetBuilder, recipe, workers: int) -> Iterator[dict]:
    """Endless train batches of the recipe's dataset settings over `builder`'s data, read by grain."""
    config = recipe.get_config().dataset
    config.update({"name": builder.name, "data_dir": os.fspath(builder.data_dir_root), "backend": "grain",
                   "workers": workers, "train_split": "train", "eval_split": "train", "validation_split": None})
    return host_train_batches(config, global_batch_size=BATCH, seed=0)


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its live child processes (grain's workers)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def throughput(batches: Iterator[dict], *, warmup_s: float, seconds: float) -> dict[str, float]:
    """Images per wall second and per CPU second (this process and its workers) over `seconds`,
    after the first batch and `warmup_s` more (autotuning, worker start-up)."""
    next(batches)
    start = time.perf_counter()
    while time.perf_counter() - start < warmup_s:
        next(batches)
    images, start, start_cpu = 0, time.perf_counter(), cpu_seconds()
    while time.perf_counter() - start < seconds:
        images += int(next(batches)["label"].shape[0])
    wall, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
    return {"images": images, "img_per_s": images / wall, "img_per_cpu_s": images / cpu}


def _row(backend: str, name: str, cores: int, figures: dict[str, float], **extra) -> dict:
    row = {"backend": backend, "transform": name, **extra, **figures,
           "img_per_s_per_core": figures["img_per_s"] / cores}
    print(f"{backend} {name}, {extra}: {figures['img_per_s']:.0f} img/s", flush=True)
    return row


def measure_tfdata(builders: dict[str, tfds.core.DatasetBuilder], threads: list[int], *, warmup_s: float,
                   seconds: float, stages: bool = False) -> list[dict]:
    """Every tf.data transform at every thread count."""
    rows = []
    for n in threads:
        for name, transform in transforms(stages).items():
            builder = builders["cifar" if name.startswith("cifar") else "imagenet"]
            figures = throughput(batches(builder, transform, n).as_numpy_iterator(), warmup_s=warmup_s,
                                 seconds=seconds)
            rows.append(_row("tfdata", name, n, figures, threads=n))
    return rows


def measure_grain(builders: dict[str, tfds.core.DatasetBuilder], workers: list[int], *, warmup_s: float,
                  seconds: float) -> list[dict]:
    """Both grain train transforms with every worker count."""
    rows = []
    for n in workers:
        for name, kind, recipe in (("grain_imagenet_train", "imagenet", imagenet_resnet),
                                   ("grain_cifar_train", "cifar", cifar_resnet110)):
            stream = grain_batches(builders[kind], recipe, n)
            try:
                figures = throughput(stream, warmup_s=warmup_s, seconds=seconds)
            finally:
                stream.close()
            rows.append(_row("grain", name, max(n, 1), figures, threads=max(n, 1), workers=n))
    return rows


def summary(rows: list[dict]) -> dict:
    """The fused/plain tf.data ratio per thread count, and the per-core goal of each backend's train
    transform, judged on images per CPU second on one core (what a core does, however loaded the machine)."""
    by_key = {(r["transform"], r["threads"]): r["img_per_s"] for r in rows}
    ratio = {str(n): by_key[name, n] / by_key["train_decode_then_crop", n]
             for name, n in by_key if name == "train_fused" and ("train_decode_then_crop", n) in by_key}
    goals = {}
    for name in ("train_fused", "grain_imagenet_train"):
        one_core = [r["img_per_cpu_s"] for r in rows
                    if r["transform"] == name and r["threads"] == 1 and r.get("workers", 0) == 0]
        if one_core:
            goals[f"{name}_img_per_cpu_s_one_core"] = {"limit": TRAIN_PER_CORE_GOAL, "measured": one_core[0],
                                                       "met": one_core[0] >= TRAIN_PER_CORE_GOAL}
    return {"fused_over_plain": ratio, "goals": goals}


def _counts(text: str) -> list[int]:
    return sorted({int(n) for n in text.split(",") if n != ""})


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated tf.data threadpool sizes")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated grain worker-process counts")
    parser.add_argument("--backends", default="tfdata,grain", help="which backends to time")
    parser.add_argument("--images", type=int, default=512, help="distinct images per dataset")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds first (autotuning)")
    parser.add_argument("--stages", action="store_true", help=f"also time {' and '.join(STAGES)} (tf.data)")
    parser.add_argument("--tiny", action="store_true", help="one batch of images, short measurements (for tests)")
    parser.add_argument("--out", default=default_out("input_pipeline"))
    args = parser.parse_args(argv)
    if args.tiny:
        args.images, args.seconds, args.warmup, args.threads, args.workers = BATCH, 0.5, 0.2, "1", "0"
    backends = set(args.backends.split(","))
    if not backends <= {"tfdata", "grain"}:
        parser.error(f"--backends: unknown {', '.join(sorted(backends - {'tfdata', 'grain'}))}; "
                     "choose from tfdata,grain")
    if "tfdata" in backends and not importlib.util.find_spec("tensorflow"):
        backends.discard("tfdata")
        print("tfdata: skipped, tensorflow is not installed")
    if "tfdata" in backends:
        tf.config.set_visible_devices([], "GPU")
    with tempfile.TemporaryDirectory(prefix="saol_images_") as data_dir:
        start = time.perf_counter()
        builders = {kind: write_dataset(data_dir, args.images, kind) for kind in ("imagenet", "cifar")}
        files = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(data_dir, "synthetic_imagenet"))
                 for f in fs if ".array_record" in f]
        mean_kb = sum(os.path.getsize(f) for f in files) / args.images / 1024
        print(f"wrote {args.images} JPEGs ({mean_kb:.0f} KB each on average) and {args.images} PNGs in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        rows = []
        if "tfdata" in backends:
            rows += measure_tfdata(builders, _counts(args.threads), warmup_s=args.warmup, seconds=args.seconds,
                                   stages=args.stages)
        if "grain" in backends:
            rows += measure_grain(builders, _counts(args.workers), warmup_s=args.warmup, seconds=args.seconds)
    result = {"images": args.images, "mean_record_kb": mean_kb, "batch": BATCH, "machine": machine(),
              "load_average": os.getloadavg(), "rows": rows, **summary(rows)}
    print(input_pipeline_table(result))
    for ratio_threads, ratio in result["fused_over_plain"].items():
        print(f"fused / decode-then-crop train transform, {ratio_threads} thread(s): {ratio:.2f}")
    for name, goal in result["goals"].items():
        print(f"goal {name}: {goal['measured']:.0f} (limit {goal['limit']:.0f}): {'met' if goal['met'] else 'MISSED'}")
    publish(args.out, result)
    return result


if __name__ == "__main__":
    main()
