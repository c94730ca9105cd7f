"""A trained model as one self-contained `jax.export` artefact that runs without this repository.

    python -m saol_jax.commands.export --workdir W [--out DIR] [--platforms cpu,cuda,tpu]

Writes DIR (default W/export):
  model.jax   the serialised inference function: uint8 images [B, H, W, C]
              (any batch B) -> {'saol_probs': [B, K], 'gap_probs': [B, K],
              'attention': [B, Ho, Wo]} (a GAP-FC model: 'gap_probs' only),
              normalisation and weights inside;
  model.json  input shape, class names, outputs and how to call it.

The weights are baked into the function as constants rather than passed as
arguments from an .npz: the artefact is one file whose call takes only the
images, so nothing can pair the graph with the wrong weights or in the wrong
order. Loading needs only jax (and numpy for the images):

    exported = jax.export.deserialize(open("DIR/model.jax", "rb").read())
    outputs = exported.call(images)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from absl import flags

from saol_jax.commands import cli
from saol_jax.core import paths
from saol_jax.core.restore import RestoredModel, class_names, load_trained, output_path

MODEL_FILE = "model.jax"
INFO_FILE = "model.json"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
OUTPUTS = {
    "saol_probs": "SAOL output probabilities y_hat [B, K]",
    "gap_probs": "GAP-FC softmax probabilities [B, K]",
    "attention": "SAOL spatial attention A, softmax over the Ho x Wo cells [B, Ho, Wo]",
}
USAGE = (
    "import jax, numpy as np\n"
    "exported = jax.export.deserialize(open('{model}', 'rb').read())\n"
    "outputs = exported.call(images)  # numpy uint8 [B, H, W, C], any B\n"
    "classes = np.argmax(outputs['{head}'], axis=-1)"
)


def inference_function(trained: RestoredModel) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """uint8 images -> the OUTPUTS the model has, float32, with `trained`'s weights as constants."""

    def infer(images: jax.Array) -> dict[str, jax.Array]:
        outputs = trained.apply(trained.params, trained.batch_stats, images)
        probs = {"gap_probs": jax.nn.softmax(outputs["gap_logits"].astype(jnp.float32), axis=-1)}
        if "log_probs" in outputs:
            probs["saol_probs"] = jnp.exp(outputs["log_probs"].astype(jnp.float32))
            probs["attention"] = jnp.exp(outputs["log_attention"].astype(jnp.float32))
        return probs

    return infer


def export_model(trained: RestoredModel, platforms: Sequence[str] = DEFAULT_PLATFORMS) -> jax.export.Exported:
    """`inference_function(trained)` exported for `platforms`, with a symbolic batch dimension."""
    (batch,) = jax.export.symbolic_shape("batch")
    images = jax.ShapeDtypeStruct((batch, *trained.info.image_shape), jnp.uint8)
    return jax.export.export(jax.jit(inference_function(trained)), platforms=tuple(platforms))(images)


def describe(trained: RestoredModel, exported: jax.export.Exported) -> dict:
    """The JSON next to the artefact: what goes in, what comes out, how to call it."""
    avals = exported.out_tree.unflatten(exported.out_avals)
    outputs = {
        name: {"shape": [None, *aval.shape[1:]], "dtype": str(aval.dtype), "meaning": OUTPUTS[name]}
        for name, aval in avals.items()
    }
    head = "saol_probs" if "saol_probs" in outputs else "gap_probs"
    return {
        "format": "jax.export",
        "file": MODEL_FILE,
        "platforms": list(exported.platforms),
        "exported_with_jax": jax.__version__,  # newer jax versions load it (jax.export compatibility)
        "input": {"shape": [None, *trained.info.image_shape], "dtype": "uint8",
                  "note": "pixels 0-255 at the model's input size, any batch; normalisation is inside"},
        "outputs": outputs,
        "class_names": class_names(trained),
        "dataset": trained.config.dataset.name,
        "model": {"backbone": trained.config.model.backbone, "head": trained.config.model.head},
        "usage": USAGE.format(model=MODEL_FILE, head=head),
    }


def write(workdir: str, out: str | None = None, platforms: Sequence[str] = DEFAULT_PLATFORMS) -> str:
    """Exports the newest checkpoint of `workdir` into `out` (default WORKDIR/export); returns `out`."""
    trained = load_trained(workdir)
    exported = export_model(trained, platforms)
    out = output_path(out, workdir, "export")
    paths.write_bytes(paths.join(out, MODEL_FILE), exported.serialize())
    paths.write_json(paths.join(out, INFO_FILE), describe(trained, exported))
    return out


def define_flags() -> None:
    """Command-line flags; defined only when this module is the program."""
    cli.define_run_flags("Output folder (default WORKDIR/export).")
    flags.DEFINE_list("platforms", list(DEFAULT_PLATFORMS), "Platforms the artefact runs on.")


def main(argv: list[str]) -> None:
    args = cli.arguments(argv)
    out = write(args.workdir, args.out, args.platforms)
    print(f"wrote {paths.join(out, MODEL_FILE)} and {paths.join(out, INFO_FILE)}")


run = cli.program(main, define_flags)  # console script saol-export

if __name__ == "__main__":
    run()
