"""What the model and the trainer know of a dataset: classes, model input shape, splits and sizes."""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds
from tensorflow_datasets.core import splits as tfds_splits

from saol_jax.data.discovery import feature_keys, open_builder

DEFAULT_LARGE_IMAGE_SIZE = 224


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and the trainer need to know about a dataset, read from tfds."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (H, W, C) of the model input after preprocessing
    train_split: str
    eval_split: str
    num_train: int
    num_eval: int
    validation_split: str | None = None  # where choices are made; None: the run has none
    num_validation: int = 0
    validation_shared: int = 0  # validation examples also in the train or the eval split


def roles(info: DatasetInfo) -> dict[str, str]:
    """{'validation': split, 'test': split}: the split each evaluation role reads (no
    'validation' without a validation split). Test figures are logged as `eval/*`."""
    found = {"validation": info.validation_split, "test": info.eval_split}
    return {role: split for role, split in found.items() if split is not None}


def num_examples(builder: tfds.core.DatasetBuilder, split) -> int:
    """Examples in `split` (a name or a tfds split expression), or ValueError listing the splits."""
    try:
        return builder.info.splits[split].num_examples
    except (KeyError, ValueError) as e:
        raise ValueError(f"{builder.name}: bad split {split!r} "
                         f"(splits: {sorted(builder.info.splits)}): {e}") from None


def _ranges(builder: tfds.core.DatasetBuilder, split: str) -> list[tuple[str, int, int]]:
    """(split name, first, end) of every example range that `split` reads."""
    instructions = tfds_splits.AbstractSplit.from_spec(split).to_absolute(builder.info.splits)
    return [(i.splitname, i.from_ or 0, builder.info.splits[i.splitname].num_examples if i.to is None else i.to)
            for i in instructions]


def shared_examples(builder: tfds.core.DatasetBuilder, a: str, b: str) -> int:
    """Examples that both split expressions `a` and `b` read (0: disjoint)."""
    return sum(max(0, min(end_a, end_b) - max(first_a, first_b))
               for name_a, first_a, end_a in _ranges(builder, a)
               for name_b, first_b, end_b in _ranges(builder, b) if name_a == name_b)


def _default_eval_split(builder: tfds.core.DatasetBuilder) -> str:
    for split in ("test", "validation"):
        if split in builder.info.splits:
            return split
    raise ValueError(f"{builder.name} has neither a 'test' nor a 'validation' split; set eval_split")


def native_shape(builder: tfds.core.DatasetBuilder, dataset_config) -> tuple[int | None, ...]:
    """The stored image shape; None for a side whose size varies between images."""
    image_key, _ = feature_keys(builder, dataset_config)
    return tuple(builder.info.features[image_key].shape)


def _model_image_shape(dataset_config, native: tuple[int | None, ...]) -> tuple[int, int, int]:
    channels = native[-1] if native[-1] is not None else 3
    if dataset_config.image_size:
        return (dataset_config.image_size, dataset_config.image_size, channels)
    if None not in native[:2]:
        return (native[0], native[1], channels)
    return (DEFAULT_LARGE_IMAGE_SIZE, DEFAULT_LARGE_IMAGE_SIZE, channels)


def info_from_builder(dataset_config, builder: tfds.core.DatasetBuilder) -> DatasetInfo:
    """The DatasetInfo of an opened builder under `dataset_config`."""
    _, label_key = feature_keys(builder, dataset_config)
    eval_split = dataset_config.eval_split or _default_eval_split(builder)
    validation_split = dataset_config.get("validation_split")  # absent from runs recorded before it existed
    num_validation = shared = 0
    if validation_split:
        num_validation = num_examples(builder, validation_split)  # first: its error names the splits
        shared = max(shared_examples(builder, validation_split, other)
                     for other in (dataset_config.train_split, eval_split))
    return DatasetInfo(
        name=dataset_config.name,
        num_classes=builder.info.features[label_key].num_classes,
        image_shape=_model_image_shape(dataset_config, native_shape(builder, dataset_config)),
        train_split=dataset_config.train_split,
        eval_split=eval_split,
        num_train=num_examples(builder, dataset_config.train_split),
        num_eval=num_examples(builder, eval_split),
        validation_split=validation_split,
        num_validation=num_validation,
        validation_shared=shared,
    )


def load_info(dataset_config) -> DatasetInfo:
    """Classes, model input shape, splits and sizes of the configured dataset."""
    return info_from_builder(dataset_config, open_builder(dataset_config))
