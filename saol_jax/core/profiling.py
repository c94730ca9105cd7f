"""A `jax.profiler` trace of a few train steps, for TensorBoard's Profile tab.

    python -m saol_jax.train --config configs/fashion_mnist.py --workdir W --config.profile_steps=5
    tensorboard --logdir W/tensorboard   # Profile tab

With `profile_steps` = N > 0, process 0 traces N steps from the
WARMUP_STEPS + 1-th step of each (re)start (the first ones compile) into
`W/tensorboard/plugins/profile/<time>/<host>.xplane.pb`. Every step runs
inside `jax.profiler.StepTraceAnnotation("train", step_num=step)`, so the
trace viewer and the overview page split the timeline per step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import jax

log = logging.getLogger(__name__)

WARMUP_STEPS = 2  # steps of a (re)start not traced: compilation and the first transfers

T = TypeVar("T")


class StepTracer:
    """Runs train steps under step annotations; traces steps [first, first + num_steps) into `logdir`."""

    def __init__(self, logdir: str, *, start_step: int, num_steps: int):
        self.logdir = logdir
        self.first = start_step + WARMUP_STEPS
        self.last = self.first + num_steps - 1
        self.tracing = False

    def run(self, step: int, fn: Callable[..., T], *args) -> T:
        """`fn(*args)` as step `step`; the last traced step is waited for before the trace stops."""
        if step == self.first and self.last >= self.first:
            jax.profiler.start_trace(self.logdir)
            self.tracing = True
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            result = fn(*args)
        if self.tracing and step == self.last:
            jax.block_until_ready(result)
            self.stop()
        return result

    def stop(self) -> None:
        """Ends a running trace (also when the run stops inside the window) and writes it."""
        if self.tracing:
            jax.profiler.stop_trace()
            self.tracing = False
            log.info("profile trace written under %s/plugins/profile", self.logdir)
