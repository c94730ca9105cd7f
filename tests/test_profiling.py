"""`profile_steps`: a jax.profiler trace under WORKDIR/tensorboard/plugins/profile, and none without it.

    nice -n 19 .venv/bin/python -m pytest -q tests/test_profiling.py
"""

from __future__ import annotations

import pytest

from saol_jax.core.trainer import train_and_evaluate
from test_trainer import tiny_config


@pytest.mark.parametrize("profile_steps, traces", [(2, 1), (0, 0)], ids=["profiled", "not-profiled"])
def test_trace_is_written_only_when_asked(tiny_dataset, tmp_path, profile_steps, traces):
    # 4 steps: with 2 warm-up steps, steps 2 and 3 are traced.
    config = tiny_config(tiny_dataset, profile_steps=profile_steps, eval_cutmix_maps=False)
    train_and_evaluate(config, str(tmp_path))
    found = list((tmp_path / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(found) == traces, found
    assert all(path.stat().st_size > 0 for path in found)
