"""Images per second per CPU core of the ImageNet recipe's train and eval transforms.

    python -m benchmarks.input_pipeline [--threads 1,2] [--images 512] [--seconds 8] [--stages] [--tiny]
                                        [--out PATH]

The benchmark writes a tfds dataset of JPEGs (quality 90, 500x375 or
375x500, smooth content with sensor-like noise) into a temporary directory,
then streams it as the trainer does (encoded records, `tf.data` map with
AUTOTUNE, batches) through the library's own transforms with the imagenet
recipe's settings (configs/imagenet_resnet.py: 224², colour jitter,
lighting):

- `train_fused`: `preprocess.inception_train_jpeg`, which decodes only the
  random-resized-crop window (`tf.image.decode_and_crop_jpeg`);
- `train_decode_then_crop`: `tf.io.decode_jpeg`, then `preprocess.inception_train`;
- `eval`: `tf.io.decode_jpeg`, then `preprocess.resize_center_crop` (resize 256, centre 224);
- with `--stages`, where the train transform's time goes: `decode_only`
  (`tf.io.decode_jpeg` of the whole image) and `train_fused_no_colour`
  (the fused transform without colour jitter and lighting).

Each runs with a private tf.data threadpool of N threads and intra-op
parallelism 1, so N is the number of cores it may use; "per core" divides
by N. "img per CPU s" divides by the process's CPU time instead, which
shows how much of the N cores the pipeline really used.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from benchmarks import default_out, format_table, write_json
from configs import imagenet_resnet
from saol_jax.data import preprocess

TRAIN_PER_CORE_GOAL = 190.0  # img/s per core: 16 host cores feed ~3,000 img/s (ResNet-50 bf16, one H100)
SIZES = ((375, 500), (500, 375))
BATCH = 64
TRANSFORMS = ("train_fused", "train_decode_then_crop", "eval")
STAGES = ("decode_only", "train_fused_no_colour")


def synthetic_jpeg(rng: np.random.Generator, height: int, width: int, quality: int = 90) -> bytes:
    """A photo-like JPEG: smooth random colour fields plus fine noise (about 100 KB at 500x375)."""
    coarse = rng.uniform(0, 255, (height // 24 + 2, width // 24 + 2, 3)).astype(np.float32)
    image = tf.image.resize(coarse[None], (height, width), method="bicubic")[0].numpy()
    image += rng.normal(0, 16, image.shape)
    return tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=quality).numpy()


def write_dataset(data_dir: str, num_images: int, seed: int = 0) -> tfds.core.DatasetBuilder:
    """Writes `num_images` synthetic JPEGs as a one-split ('train') tfds dataset; returns its builder."""

    class SyntheticJpegs(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self) -> tfds.core.DatasetInfo:
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(num_classes=1000),
                }),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            rng = np.random.default_rng(seed)
            for index in range(num_images):
                height, width = SIZES[index % len(SIZES)]
                # A file object: tfds stores its bytes as they are, without re-encoding.
                image = io.BytesIO(synthetic_jpeg(rng, height, width))
                yield index, {"image": image, "label": int(rng.integers(1000))}

    builder = SyntheticJpegs(data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


def transforms(stages: bool = False) -> dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]]:
    """(JPEG string, seed [2]) -> uint8 image, per transform, with the imagenet recipe's settings."""
    d = imagenet_resnet.get_config().dataset
    size, jitter, lighting = d.image_size, d.color_jitter, d.lighting
    chosen = {
        "train_fused": lambda jpeg, seed: preprocess.inception_train_jpeg(jpeg, seed, size, jitter, lighting),
        "train_decode_then_crop": lambda jpeg, seed: preprocess.inception_train(
            tf.io.decode_jpeg(jpeg, channels=3), seed, size, jitter, lighting),
        "eval": lambda jpeg, seed: preprocess.resize_center_crop(tf.io.decode_jpeg(jpeg, channels=3), size),
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


def throughput(ds: tf.data.Dataset, *, warmup_s: float, seconds: float) -> dict[str, float]:
    """Images per wall second and per process-CPU second over `seconds`, after `warmup_s` of autotuning."""
    iterator = iter(ds)
    start = time.perf_counter()
    while time.perf_counter() - start < warmup_s:
        next(iterator)
    images, start, start_cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        images += int(next(iterator)["label"].shape[0])
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {"images": images, "img_per_s": images / wall, "img_per_cpu_s": images / cpu}


def measure(builder: tfds.core.DatasetBuilder, threads: list[int], *, warmup_s: float, seconds: float,
            stages: bool = False) -> dict:
    """Every transform at every thread count; the fused/plain train ratio per thread count; the goal."""
    rows = []
    for n in threads:
        for name, transform in transforms(stages).items():
            figures = throughput(batches(builder, transform, n), warmup_s=warmup_s, seconds=seconds)
            rows.append({"transform": name, "threads": n, **figures, "img_per_s_per_core": figures["img_per_s"] / n})
            print(f"{name}, {n} thread(s): {figures['img_per_s']:.0f} img/s", flush=True)
    by_key = {(r["transform"], r["threads"]): r["img_per_s"] for r in rows}
    ratio = {str(n): by_key["train_fused", n] / by_key["train_decode_then_crop", n] for n in threads}
    single = min(threads)
    per_core = by_key["train_fused", single] / single
    return {
        "rows": rows,
        "fused_over_plain": ratio,
        "goals": {f"train_fused_img_per_s_per_core_{single}_threads": {
            "limit": TRAIN_PER_CORE_GOAL, "measured": per_core, "met": per_core >= TRAIN_PER_CORE_GOAL}},
    }


def table(result: dict) -> str:
    return format_table(["transform", "threads", "img/s", "img/s per core", "img per CPU s"], [
        [r["transform"], r["threads"], f"{r['img_per_s']:.0f}", f"{r['img_per_s_per_core']:.0f}",
         f"{r['img_per_cpu_s']:.0f}"] for r in result["rows"]])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated tf.data threadpool sizes")
    parser.add_argument("--images", type=int, default=512, help="distinct JPEGs in the dataset")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds first (autotuning)")
    parser.add_argument("--stages", action="store_true", help=f"also time {' and '.join(STAGES)}")
    parser.add_argument("--tiny", action="store_true", help="16 images, short measurements (for tests)")
    parser.add_argument("--out", default=default_out("input_pipeline"))
    args = parser.parse_args(argv)
    if args.tiny:
        args.images, args.seconds, args.warmup, args.threads = 16, 0.5, 0.2, "1"
    threads = sorted({int(n) for n in args.threads.split(",")})
    tf.config.set_visible_devices([], "GPU")
    with tempfile.TemporaryDirectory(prefix="saol_jpegs_") as data_dir:
        start = time.perf_counter()
        builder = write_dataset(data_dir, args.images)
        files = [os.path.join(dp, f) for dp, _, fs in os.walk(data_dir) for f in fs if ".tfrecord" in f]
        mean_kb = sum(os.path.getsize(f) for f in files) / args.images / 1024
        print(f"wrote {args.images} JPEGs ({mean_kb:.0f} KB each on average) in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        result = measure(builder, threads, warmup_s=args.warmup, seconds=args.seconds, stages=args.stages)
    result = {"images": args.images, "mean_record_kb": mean_kb, "batch": BATCH, "cores": os.cpu_count(), **result}
    print(table(result))
    for ratio_threads, ratio in result["fused_over_plain"].items():
        print(f"fused / decode-then-crop train transform, {ratio_threads} thread(s): {ratio:.2f}")
    for name, goal in result["goals"].items():
        print(f"goal {name}: {goal['measured']:.0f} (limit {goal['limit']:.0f}): {'met' if goal['met'] else 'MISSED'}")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
