"""The grain input path (`dataset.backend='grain'`): train and eval batches by random access, without TensorFlow.

Train: global step `s` of epoch `e = s // steps_per_epoch` holds the examples
at positions `(s mod steps_per_epoch) * B ...` of a permutation of the whole
split drawn from (seed, e), and the example at stream position `q = s*B + j`
is augmented with a generator seeded by (seed, q). A batch is therefore a
pure function of (seed, step): resuming at step `s` starts there without
reading a skipped record, and a host reads its slice of the global batch
(by global position), so global batches do not depend on the host count.
Batches are built in `dataset.workers` processes (0: in this process).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import grain
import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from saol_jax.data import grain_transforms
from saol_jax.data.discovery import feature_keys, open_builder
from saol_jax.data.grain_source import data_source
from saol_jax.data.hosts import concatenated, local_batch_size, process, read_shares
from saol_jax.data.info import info_from_builder, native_shape, num_examples
from saol_jax.data.padded_eval import BOX_KEY, eval_steps, scores_boxes

_SHUFFLE, _AUGMENT = 0, 1  # seed streams


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The order int64 [num_examples] in which `epoch` visits the split."""
    return np.random.default_rng([seed, _SHUFFLE, epoch]).permutation(num_examples)


def example_rng(seed: int, position: int) -> np.random.Generator:
    """The augmentation generator of the example at stream position `position`."""
    return np.random.default_rng([seed, _AUGMENT, position])


@dataclasses.dataclass
class _TrainBatch:
    """Step -> this host's slice of the global batch; picklable, so grain can run it in workers."""

    source: object
    keys: tuple[str, str]
    transform: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    seed: int
    global_batch: int
    positions: range  # this host's positions within a global batch
    steps_per_epoch: int

    def __post_init__(self):
        self._epoch, self._order = -1, np.empty(0, np.int64)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_permutation(len(self.source), self.seed, epoch)
        first = within * self.global_batch
        indices = self._order[first + self.positions.start:first + self.positions.stop]
        examples = self.source.__getitems__([int(i) for i in indices])
        image_key, label_key = self.keys
        images = [
            self.transform(example[image_key], example_rng(self.seed, step * self.global_batch + position))
            for example, position in zip(examples, self.positions)
        ]
        return {"image": np.stack(images),
                "label": np.asarray([example[label_key] for example in examples], np.int32)}


def _closing(iterator) -> Iterator[dict]:
    """`iterator`'s batches, copied out of grain's shared memory; closing this generator stops the workers."""
    try:
        for batch in iterator:
            yield {name: np.array(value) for name, value in batch.items()}
    finally:
        iterator.close()


def _pipeline(steps: range, build: Callable[[int], dict], dataset_config) -> Iterator[dict]:
    """`build(s)` for each s in `steps`, in order, `dataset.prefetch` ahead, in `dataset.workers` processes."""
    ahead = max(1, dataset_config.prefetch)
    ds = grain.MapDataset.range(steps.start, steps.stop).map(build).to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=ahead))
    if dataset_config.workers:
        if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags; a library caller has none
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=dataset_config.workers,
                                                         per_worker_buffer_size=ahead))
    return _closing(iter(ds))


def host_train_batches(dataset_config, *, global_batch_size: int, seed: int, start_step: int = 0) -> Iterator[dict]:
    """Endless train batches {'image': uint8 [b,H,W,C], 'label': int32 [b]} of this host, from `start_step` on.

    b is the host's share of `global_batch_size` (see `hosts.read_shares`).
    """
    mine, shares = read_shares(dataset_config)
    share = local_batch_size(global_batch_size, shares)
    builder = open_builder(dataset_config)
    info = info_from_builder(dataset_config, builder)
    keys = feature_keys(builder, dataset_config)
    source = data_source(builder, info.train_split, keys[:1] if grain_transforms.decodes_itself(dataset_config) else ())
    per_epoch = len(source) // global_batch_size
    if per_epoch == 0:
        raise ValueError(f"global batch {global_batch_size} exceeds the {len(source)} training examples")
    transform = grain_transforms.train_transform(dataset_config, native_shape(builder, dataset_config),
                                                 info.image_shape)
    build = _TrainBatch(source, keys, transform, seed, global_batch_size,
                        range(mine.start * share, mine.stop * share), per_epoch)
    return _pipeline(range(start_step, np.iinfo(np.int64).max), build, dataset_config)


@dataclasses.dataclass
class _EvalBatch:
    """Batch number -> {'image', 'label', 'mask'[, 'bbox']} of a host's eval share `source`, padded."""

    source: object
    keys: tuple[str, str]
    transform: Callable[[np.ndarray], np.ndarray]
    batch: int
    image_shape: tuple[int, int, int]
    boxed: bool

    def __call__(self, number: int) -> dict[str, np.ndarray]:
        wanted = range(len(self.source))[number * self.batch:(number + 1) * self.batch]
        examples = self.source.__getitems__(list(wanted))
        pad = self.batch - len(examples)
        image_key, label_key = self.keys
        images = [self.transform(example[image_key]) for example in examples]
        out = {
            "image": np.stack(images + [np.zeros(self.image_shape, np.uint8)] * pad),
            "label": np.asarray([example[label_key] for example in examples] + [0] * pad, np.int32),
            "mask": np.arange(self.batch) < len(examples),
        }
        if self.boxed:
            boxes = [np.asarray(example[BOX_KEY], np.float32).reshape(4) for example in examples]
            out[BOX_KEY] = np.stack(boxes + [np.zeros(4, np.float32)] * pad)
        return out


def eval_batches(dataset_config, *, global_batch_size: int, split: str | None = None,
                 process_index: int | None = None, process_count: int | None = None) -> Iterator[dict]:
    """This host's share of `split` (default: the eval split) once, as {'image', 'label', 'mask'}
    batches padded with mask=False.

    Each host reads its `tfds.split_for_jax_process` share and yields
    `padded_eval.eval_steps` batches, as on the tf.data path. A dataset with
    a top-level `bbox` feature adds `bbox` float32 [b, 4], as there too.
    `process_index`/`process_count` default to jax's.
    """
    index, count = process(process_index, process_count)
    batch = local_batch_size(global_batch_size, count)
    builder = open_builder(dataset_config)
    info = info_from_builder(dataset_config, builder)
    split = split or info.eval_split
    source = data_source(builder, tfds.split_for_jax_process(split, process_index=index, process_count=count))
    build = _EvalBatch(source, feature_keys(builder, dataset_config),
                       grain_transforms.eval_transform(dataset_config, native_shape(builder, dataset_config),
                                                       info.image_shape),
                       batch, info.image_shape, scores_boxes(builder, dataset_config))
    steps = eval_steps(num_examples(builder, split), global_batch_size, process_count=count)
    return _pipeline(range(steps), build, dataset_config)


def host_eval_batches(dataset_config, *, global_batch_size: int, split: str | None = None) -> Iterator[dict]:
    """This process's slice of every global batch of `split` (its shares, concatenated, padded)."""
    mine, shares = read_shares(dataset_config)
    return concatenated([
        eval_batches(dataset_config, global_batch_size=global_batch_size, split=split,
                     process_index=share, process_count=shares)
        for share in mine
    ])
