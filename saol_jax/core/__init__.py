"""The library below the command lines: losses, the train step, the run loop and what it stands on.

Recipe building (`recipe`, `options`, `ladder`), the config check (`config_check`), the model's
pieces of training (`cutmix`, `losses`, `optim`, `train_step`), evaluation (`localisation`,
`cutmix_eval`, `evaluation`), a ViT's attention rollout (`rollout`), the run (`trainer`, `prefetch`, `metrics`, `profiling`,
`checkpoint`, `run_identity`, `workdir_lock`, `faults`, `compilation_cache`), devices and
processes (`sharding`, `distributed`), trained runs read back (`restore`) and paths (`paths`).
Imports only `saol_jax.models`, `saol_jax.data` and itself: never `saol_jax.commands` or
`saol_jax.studies`.
"""
