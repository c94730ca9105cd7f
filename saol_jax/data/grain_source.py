"""ArrayRecord copies of prepared tfds datasets, and the random-access sources read from them.

tf.data (`builder.as_dataset`) reads only the TFRecord files and tfds's
random access (`builder.as_data_source`) only ArrayRecord, so a prepared
dataset keeps both: `add_array_record` copies each TFRecord shard record for
record (same serialized examples, same order) into an ArrayRecord shard next
to it and lists ArrayRecord as the dataset's alternative format. Neither
function needs TensorFlow.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import file_adapters

from saol_jax.data.discovery import DatasetNotFoundError, prepare_command

ARRAY_RECORD = file_adapters.FileFormat.ARRAY_RECORD
TFRECORD = file_adapters.FileFormat.TFRECORD
_LENGTH = struct.Struct("<Q")
_CRC_BYTES = 4


def tfrecord_records(path: epath.Path) -> Iterator[bytes]:
    """The records of one TFRecord file in order (lengths and CRCs are skipped, not checked)."""
    with path.open("rb") as f:
        while header := f.read(_LENGTH.size + _CRC_BYTES):
            if len(header) != _LENGTH.size + _CRC_BYTES:
                raise ValueError(f"{path}: truncated TFRecord header")
            (length,) = _LENGTH.unpack(header[:_LENGTH.size])
            record = f.read(length)
            if len(record) != length or len(f.read(_CRC_BYTES)) != _CRC_BYTES:
                raise ValueError(f"{path}: truncated TFRecord record")
            yield record


def _from_files(builder: tfds.core.DatasetBuilder) -> tfds.core.DatasetBuilder:
    """The prepared dataset as its files describe it.

    A registered builder's own info (e.g. tfds's fashion_mnist) does not read
    the alternative formats back from dataset_info.json; and opening random
    access switches a builder's info to ArrayRecord, which must not happen to
    a builder that tf.data still reads.
    """
    return tfds.builder_from_directory(builder.data_dir)


def has_array_record(builder: tfds.core.DatasetBuilder) -> bool:
    """Whether the prepared dataset can be read by random access."""
    return ARRAY_RECORD in _from_files(builder).info.available_file_formats()


def add_array_record(builder: tfds.core.DatasetBuilder) -> bool:
    """Writes an ArrayRecord copy of a prepared TFRecord dataset; False if it already has one."""
    builder = _from_files(builder)
    if has_array_record(builder):
        return False
    if builder.info.file_format not in (None, TFRECORD):
        raise ValueError(f"{builder.name} is stored as {builder.info.file_format}, not TFRecord")
    data_dir = epath.Path(builder.data_dir)
    suffix = f".{TFRECORD.file_suffix}-"
    shards = sorted(p for p in data_dir.iterdir() if suffix in p.name)
    if not shards:
        raise ValueError(f"{builder.name}: no TFRecord shards in {data_dir}")
    for shard in shards:
        target = shard.with_name(shard.name.replace(suffix, f".{ARRAY_RECORD.file_suffix}-"))
        partial = target.with_name(target.name + ".incomplete")
        file_adapters.ArrayRecordFileAdapter.write_examples(
            partial, ((None, record) for record in tfrecord_records(shard)))
        partial.rename(target)
    builder.info.add_alternative_file_format(ARRAY_RECORD)
    builder.info.write_to_directory(data_dir, all_metadata=False)
    return True


def data_source(builder: tfds.core.DatasetBuilder, split: str, encoded: tuple[str, ...] = ()):
    """Random-access source of `split` (decoded examples, numpy; the features named in `encoded` left
    as their stored bytes), or DatasetNotFoundError saying how to add one."""
    if not has_array_record(builder):
        root = os.fspath(builder.data_dir_root)
        raise DatasetNotFoundError(
            f"{builder.name} in {root!r} has no ArrayRecord copy, which dataset.backend='grain' reads. "
            f"Add one with: {prepare_command(builder.name, root)}"
        )
    return _from_files(builder).as_data_source(split=split, file_format=ARRAY_RECORD,
                                               decoders={key: tfds.decode.SkipDecoding() for key in encoded} or None)
