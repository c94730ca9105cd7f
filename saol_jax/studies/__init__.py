"""Studies over many runs (`python -m saol_jax.studies.<name>`, console scripts `saol-<name>`):
`ablate` (the head ladder over several seeds, a result file per run), `stats` (its t-tests),
`results` (the result files), `sweep` (a setting chosen on validation from several studies),
`report` (tables rendered from them into markdown and checked), `finished` (the seeds a stopped
study has finished) and `baselines` (class-agnostic localisation baselines of a dataset with
boxes). Built on `saol_jax.core` and the commands; the library never imports a study.
"""
