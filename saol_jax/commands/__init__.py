"""The command lines, one module each (`python -m saol_jax.commands.<name>`, console scripts
`saol-<name>`): `train` (also `python -m saol_jax.train`), `evaluate`, `predict`, `export`, `wsol`,
`visualize`, `compare_heads` and `convert_torchvision`; `cli` is what they share (flag parsing with
one `error:` line, the console, the `main` tail). Built on `saol_jax.core`; the library never imports
a command.
"""
