"""Where numbers go: metrics.jsonl, TensorBoard event files and a progress bar.

Only process 0 writes; other processes get a writer that does nothing, so
the caller never branches on the process index.

metrics.jsonl holds one JSON object per event with keys:
  `event`  "train" (averaged over the last `log_every_steps` steps) or "eval";
  `step`   optimiser steps taken; `epoch` (float) epochs seen;
  `time`   seconds since the run (or resumed run) started;
  train:   `loss/<term>` for each loss term (`saol_ce`, `ss1`, `ss2`, `sd`,
           `gap_ce`, `total`), `train/<head>_top1|top5` (on the mixed
           images, against the first label), `train/lr`, `train/grad_norm`,
           `train/img_per_s`;
  eval:    `eval/<head>_top1`, `eval/<head>_top5`, `eval/<head>_loss` for
           head in {saol, gap}, `eval/count` (examples evaluated);
           on a dataset with true boxes (saol_jax.localization), for map in
           {attention, spatial, product} (SAOL) and cam (GAP-FC):
           `eval/loc_<map>_pointing`, `eval/loc_<map>_mass_ratio`,
           `eval/loc_<map>_iou`, `eval/loc_<map>_gt_known`,
           `eval/loc_<map>_top1_loc`;
           with a SAOL head, how its maps follow the pasted box on CutMix'ed
           eval images (saol_jax.cutmix_eval; a check of label mixing, not
           localisation): `eval/cutmix_partner_iou`,
           `eval/cutmix_att_mass_in_box`, `eval/cutmix_box_area_share`,
           `eval/cutmix_att_box_concentration`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping

import jax
import tqdm


class MetricWriter:
    """Appends events to `workdir/metrics.jsonl` and TensorBoard event files."""

    def __init__(self, workdir: str, *, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._start = time.time()
        self._jsonl = None
        self._tb = None
        if self.enabled:
            import tensorflow as tf  # tf.io.gfile: local paths and gs:// alike

            tf.io.gfile.makedirs(workdir)
            self._jsonl = tf.io.gfile.GFile(os.path.join(workdir, "metrics.jsonl"), "a")
            self._tb = _TensorBoard(os.path.join(workdir, "tensorboard"))

    def write(self, event: str, step: int, values: Mapping[str, float], **extra: float) -> None:
        if not self.enabled:
            return
        record = {"event": event, "step": int(step), "time": round(time.time() - self._start, 3)}
        record.update(extra)
        record.update({k: float(v) for k, v in values.items()})
        self._jsonl.write(json.dumps(record, allow_nan=True) + "\n")
        self._jsonl.flush()
        self._tb.write(step, {k: float(v) for k, v in values.items() if _finite(v)})

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


def _finite(value: float) -> bool:
    return math.isfinite(float(value))


class _TensorBoard:
    """Scalar summaries through tf.summary (TensorFlow is already the data dependency)."""

    def __init__(self, logdir: str):
        import tensorflow as tf

        self._tf = tf
        self._writer = tf.summary.create_file_writer(logdir)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        with self._writer.as_default(step=int(step)):
            for name, value in scalars.items():
                self._tf.summary.scalar(name, value)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class Progress:
    """A progress bar over optimiser steps showing epoch, loss, img/s and ETA (process 0)."""

    def __init__(self, total_steps: int, initial_step: int, *, enabled: bool | None = None):
        enabled = jax.process_index() == 0 if enabled is None else enabled
        self._bar = tqdm.tqdm(
            total=total_steps,
            initial=initial_step,
            unit="step",
            dynamic_ncols=True,
            disable=not enabled,
            mininterval=2.0,
        )

    def update(self, step: int, **fields: float) -> None:
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in fields.items()}, refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        self._bar.close()
