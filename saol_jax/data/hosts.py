"""Which part of each split a process reads, and how its shares become its slice of a global batch.

Each host reads its own share of a split (`tfds.split_for_jax_process`) and
yields uint8 images; normalisation happens on the device. With
`dataset.host_shards` a process reads several consecutive shares and joins
them, so a run on fewer hosts sees the data of a run on more. A split may
be any tfds split expression (a carve such as `train[:90%]`): tfds cuts the
examples it selects, not the whole split, into the shares.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np


def process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    """(index, count) of the reading process: the given values, else jax's."""
    return (jax.process_index() if process_index is None else process_index,
            jax.process_count() if process_count is None else process_count)


def local_batch_size(global_batch_size: int, process_count: int) -> int:
    """Per-host batch size; the global batch must split evenly over the hosts."""
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(f"global_batch_size {global_batch_size} is not a positive multiple of "
                         f"the process count {process_count}")
    return global_batch_size // process_count


def read_shares(dataset_config) -> tuple[range, int]:
    """The shares of each split this process reads, and the number of shares."""
    shares = dataset_config.host_shards or jax.process_count()
    if shares % jax.process_count():
        raise ValueError(
            f"dataset.host_shards={shares} must be a multiple of the {jax.process_count()} processes"
        )
    per_process = shares // jax.process_count()
    first = jax.process_index() * per_process
    return range(first, first + per_process), shares


def concatenated(streams: list[Iterator[dict]]) -> Iterator[dict]:
    """Batches of several shares' streams joined along the batch axis, in share order."""
    for parts in zip(*streams):
        yield {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
