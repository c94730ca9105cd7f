"""A trained model back from its workdir: config, dataset info, weights (any saved step), a jitted forward pass."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import ml_collections
from flax import nnx

from saol_jax import data
from saol_jax.core import checkpoint, paths, sharding
from saol_jax.models import DTYPES, build_model, normalise


@dataclasses.dataclass
class RestoredModel:
    """A restored model in eval mode.

    `apply(params, batch_stats, images)` is a pure function of uint8 images
    [B, H, W, C] at the model's input size; it returns the model's outputs
    (`gap_logits` [B, K] and, with SAOL, `log_attention` [B, Ho, Wo],
    `log_spatial` [B, Ho, Wo, K], `log_probs` [B, K]) plus `cam`
    [B, Ho, Wo, K], the GAP-FC layer applied at every cell (class activation
    maps; their mean over cells is `gap_logits`). `forward(images)` is the
    same, jitted, with the restored weights. `graphdef` is the model's graph
    in eval mode (for `train_step.make_eval_step`), `step` the checkpoint's step.
    """

    config: ml_collections.ConfigDict
    info: data.DatasetInfo
    params: nnx.State
    batch_stats: nnx.State
    apply: Callable[[nnx.State, nnx.State, jax.Array], dict[str, jax.Array]]
    graphdef: nnx.GraphDef | None = None
    step: int | None = None

    def __post_init__(self):
        self._jitted = jax.jit(self.apply)

    def forward(self, images: jax.Array) -> dict[str, jax.Array]:
        return self._jitted(self.params, self.batch_stats, images)


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The run's `config.json` as a ConfigDict; `workdir` may be relative, absolute or a URL."""
    path = paths.join(paths.resolve(workdir), "config.json")
    if not paths.exists(path):
        raise FileNotFoundError(f"{workdir} holds no training run ({path} is missing): "
                                "give the --workdir of a run of saol_jax.train")
    return ml_collections.ConfigDict(paths.read_json(path))


def use_run_devices(workdir: str) -> None:
    """Splits the CPU into the run's `num_cpu_devices`, as in training; call before any device is touched."""
    sharding.configure_cpu_devices(read_config(workdir).num_cpu_devices)


def output_path(out: str | None, workdir: str, default_name: str) -> str:
    """Where a tool writes its result: `out` resolved, or `default_name` inside `workdir`."""
    return paths.resolve(out) if out else paths.join(paths.resolve(workdir), default_name)


def model_inputs(config: ml_collections.ConfigDict, images: jax.Array) -> jax.Array:
    """uint8 images [B, H, W, C] -> the run's model input: normalised by its dataset, in its dtype."""
    return normalise(images, tuple(config.dataset.mean), tuple(config.dataset.std), DTYPES[config.model.dtype])


class NoCheckpointError(FileNotFoundError):
    """The workdir has no complete checkpoint to load."""


class UnknownStepError(ValueError):
    """No checkpoint was saved at the asked step; the message lists the saved ones."""


def saved_steps(workdir: str) -> list[int]:
    """Steps of the complete checkpoints of `workdir`, oldest first; NoCheckpointError if none."""
    directory = paths.join(paths.resolve(workdir), "checkpoints")
    if not paths.exists(directory):  # checked first: opening a Checkpointer would create the folder
        raise NoCheckpointError(f"{workdir} holds no checkpoints ({directory} is missing)")
    checkpointer = checkpoint.Checkpointer(directory, async_save=False)
    try:
        steps = checkpointer.steps()
    finally:
        checkpointer.close()
    if not steps:
        raise NoCheckpointError(f"{workdir} holds no complete checkpoint yet")
    return steps


def load_workdir_weights(
    workdir: str, params: nnx.State, batch_stats: nnx.State, step: int | None = None
) -> tuple[int, nnx.State, nnx.State]:
    """(step, params, batch_stats) of the checkpoint at `step` (default: the newest) of `workdir`.

    Raises NoCheckpointError without checkpoints, UnknownStepError (listing
    the saved steps) for a step that was not saved or is no longer kept.
    """
    steps = saved_steps(workdir)
    step = steps[-1] if step is None else step
    if step not in steps:
        raise UnknownStepError(f"{workdir} has no checkpoint at step {step}; saved steps: "
                               f"{', '.join(map(str, steps))}")
    directory = paths.join(paths.resolve(workdir), "checkpoints")
    return step, *checkpoint.load_weights(directory, params, batch_stats, step=step)


def class_names(trained: RestoredModel) -> list[str]:
    """The dataset's class names, or the class indices where its label feature has none."""
    builder = data.open_builder(trained.config.dataset)
    _, label_key = data.feature_keys(builder, trained.config.dataset)
    names = list(getattr(builder.info.features[label_key], "names", None) or [])
    num_classes = trained.info.num_classes
    return names if len(names) == num_classes else [str(k) for k in range(num_classes)]


def load_trained(
    workdir: str, dataset_overrides: Mapping[str, object] | None = None, step: int | None = None
) -> RestoredModel:
    """Rebuilds the model of `workdir` and loads the weights of its checkpoint at `step` (default: newest).

    `dataset_overrides` replace fields of the run's `config.dataset` (e.g. a
    `data_dir` on another machine) before the dataset info is read. Raises
    NoCheckpointError or UnknownStepError (see `load_workdir_weights`).
    """
    workdir = paths.resolve(workdir)
    config = read_config(workdir)
    config.dataset.update(dict(dataset_overrides or {}))
    info = data.load_info(config.dataset)
    with jax.threefry_partitionable(False):
        model = build_model(
            config.model, num_classes=info.num_classes, in_channels=info.image_shape[2], rngs=nnx.Rngs(0)
        )
    model.eval()
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    step, params, batch_stats = load_workdir_weights(workdir, params, batch_stats, step)

    def apply(params: nnx.State, batch_stats: nnx.State, images: jax.Array) -> dict[str, jax.Array]:
        model = nnx.merge(graphdef, params, batch_stats, copy=True)
        return model(model_inputs(config, images), with_cam=True)

    return RestoredModel(config=config, info=info, params=params, batch_stats=batch_stats, apply=apply,
                   graphdef=graphdef, step=step)
