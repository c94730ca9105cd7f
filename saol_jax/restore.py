"""A trained model back from its workdir: config, dataset info, weights, a jitted forward pass."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import ml_collections
from flax import nnx

from saol_jax import checkpoint, data, paths
from saol_jax.models import DTYPES, build_model, normalise


@dataclasses.dataclass
class Trained:
    """A restored model in eval mode.

    `apply(params, batch_stats, images)` is a pure function of uint8 images
    [B, H, W, C] at the model's input size; it returns the model's outputs
    (`gap_logits` [B, K] and, with SAOL, `log_attention` [B, Ho, Wo],
    `log_spatial` [B, Ho, Wo, K], `log_probs` [B, K]) plus `cam`
    [B, Ho, Wo, K], the GAP-FC layer applied at every cell (class activation
    maps; their mean over cells is `gap_logits`). `forward(images)` is the
    same, jitted, with the restored weights.
    """

    config: ml_collections.ConfigDict
    info: data.DatasetInfo
    params: nnx.State
    batch_stats: nnx.State
    apply: Callable[[nnx.State, nnx.State, jax.Array], dict[str, jax.Array]]

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


def load_trained(workdir: str, dataset_overrides: Mapping[str, object] | None = None) -> Trained:
    """Rebuilds the model of `workdir` and loads its newest checkpoint's weights.

    `dataset_overrides` replace fields of the run's `config.dataset` (e.g. a
    `data_dir` on another machine) before the dataset info is read.
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
    params, batch_stats = checkpoint.load_weights(paths.join(workdir, "checkpoints"), params, batch_stats)
    mean, std = tuple(config.dataset.mean), tuple(config.dataset.std)
    dtype = DTYPES[config.model.dtype]

    def apply(params: nnx.State, batch_stats: nnx.State, images: jax.Array) -> dict[str, jax.Array]:
        model = nnx.merge(graphdef, params, batch_stats, copy=True)
        return model(normalise(images, mean, std, dtype), with_cam=True)

    return Trained(config=config, info=info, params=params, batch_stats=batch_stats, apply=apply)
