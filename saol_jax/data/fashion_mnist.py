"""Fashion-MNIST prepared offline from the Debian package's idx files.

The files of `dataset-fashion-mnist` have gzip headers that differ from the
upstream downloads, so tfds's checksum check rejects them as manual downloads.
`LocalFashionMNIST` subclasses tfds's own builder (same name, version,
features and supervised keys) and only replaces where the examples come from,
so `tfds.load('fashion_mnist', data_dir=D, download=False)` reads the result
like the original.

Images are handed to tfds as PNG bytes encoded with Pillow (`png`), and
where TensorFlow is absent the datasets are written straight in ArrayRecord
(`offline_format`), so preparing needs no TensorFlow there.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import tempfile
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.image_classification import mnist

DEFAULT_SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "install with: apt-get install dataset-fashion-mnist"

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: str) -> np.ndarray:
    """Decodes one gzipped idx file (magic, dims, then row-major data)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = data[0] | data[1], data[2], data[3]
    if zero != 0 or dtype_code not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=_IDX_DTYPES[dtype_code], offset=4 + 4 * ndim).reshape(shape)


def png(image: np.ndarray) -> bytes:
    """uint8 [H, W, 1 or 3] -> PNG bytes; tfds stores encoded bytes as they are (its own encoder needs TensorFlow)."""
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def offline_format() -> str:
    """The tfds file format the offline datasets are written in.

    TFRecord (which tf.data reads; `prepare` then adds the ArrayRecord copy)
    where TensorFlow can be imported, which writing TFRecord needs; else
    ArrayRecord, which the grain path reads.
    """
    return "tfrecord" if importlib.util.find_spec("tensorflow") else "array_record"


def write_offline(builder: tfds.core.DatasetBuilder, source_dir: str, hint: str = INSTALL_HINT) -> str:
    """Prepares `builder` from the idx files in `source_dir` unless done already; returns the data_dir root."""
    if not builder.is_prepared():
        missing = missing_source_files(source_dir)
        if missing:
            raise FileNotFoundError(f"Fashion-MNIST idx files not found: {', '.join(missing)}; {hint}")
        with tempfile.TemporaryDirectory() as scratch:  # tfds creates a download dir it does not need here
            builder.download_and_prepare(
                download_dir=scratch, download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
    return os.fspath(builder.data_dir_root)


def missing_source_files(source_dir: str) -> list[str]:
    """Paths of the four idx files that are absent from `source_dir`."""
    paths = [os.path.join(source_dir, f) for files in SPLIT_FILES.values() for f in files]
    return [p for p in paths if not os.path.isfile(p)]


class LocalFashionMNIST(mnist.FashionMNIST, skip_registration=True):
    """tfds's FashionMNIST, reading the idx files from a local directory."""

    name = "fashion_mnist"

    def __init__(self, *, source_dir: str = DEFAULT_SOURCE_DIR, **kwargs):
        self._source_dir = source_dir
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {
            split: self._generate_from_idx(*(os.path.join(self._source_dir, f) for f in files))
            for split, files in SPLIT_FILES.items()
        }

    def _generate_from_idx(self, images_path: str, labels_path: str) -> Iterator[tuple[int, dict]]:
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if len(images) != len(labels):
            raise ValueError(f"{images_path} and {labels_path} differ in length")
        for index, (image, label) in enumerate(zip(images, labels)):
            yield index, {"image": png(image[..., None]), "label": int(label)}


class CanvasBenchmark(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A benchmark composed from the Fashion-MNIST idx files in `source_dir`: `sizes` examples per
    split (default the subclass's DEFAULT_SIZES), drawn from `seed`. A subclass gives `_info` and
    `_generate_examples(split)`."""

    DEFAULT_SIZES: dict[str, int] = {}

    def __init__(self, *, source_dir: str = DEFAULT_SOURCE_DIR, sizes: dict[str, int] | None = None,
                 seed: int = 0, **kwargs):
        self._source_dir = source_dir
        self._sizes = dict(self.DEFAULT_SIZES if sizes is None else sizes)
        self._seed = seed
        super().__init__(**kwargs)

    @classmethod
    def prepare(cls, data_dir: str | None, source_dir: str = DEFAULT_SOURCE_DIR,
                sizes: dict[str, int] | None = None, seed: int = 0) -> str:
        """Writes the benchmark in tfds format under `data_dir` (None: tfds default); returns the root.

        Does nothing when it is already prepared there.
        """
        builder = cls(data_dir=data_dir, source_dir=source_dir, sizes=sizes, seed=seed, file_format=offline_format())
        return write_offline(builder, source_dir)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split) for split in self._sizes}

    def _canvas_info(self, description: str, side: int, class_names: list[str],
                     **extra: tfds.features.FeatureConnector) -> tfds.core.DatasetInfo:
        """The info of a side x side grayscale `image` with its `label`, true `bbox` and `extra` features."""
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(side, side, 1)),
                "label": tfds.features.ClassLabel(names=class_names),
                "bbox": tfds.features.BBoxFeature(),
                **extra,
            }),
            supervised_keys=("image", "label"),
        )


def prepare_fashion_mnist(data_dir: str | None, source_dir: str = DEFAULT_SOURCE_DIR) -> str:
    """Writes Fashion-MNIST in tfds format under `data_dir`; returns the data_dir root.

    `data_dir=None` means tfds's default (honouring TFDS_DATA_DIR). Does nothing
    when the dataset is already prepared there.
    """
    builder = LocalFashionMNIST(data_dir=data_dir, source_dir=source_dir, file_format=offline_format())
    return write_offline(builder, source_dir,
                         f"{INSTALL_HINT} (or pass --source_dir DIR holding the four *-ubyte.gz files)")
