"""Where numbers go: metrics.jsonl, TensorBoard event files and a progress bar.

Only process 0 writes; other processes get a writer that does nothing, so
the caller never branches on the process index.

metrics.jsonl holds one JSON object per event with keys:
  `event`  "train" (averaged over the last `log_every_steps` steps), "eval"
           (the eval split: the test figures) or "val" (the validation split,
           `dataset.validation_split`: where choices are made);
  `step`   optimiser steps taken; `epoch` (float) epochs seen;
  `split`  eval and val: the tfds split expression evaluated;
  `time`   seconds since the run (or resumed run) started;
  train:   `loss/<term>` for each loss term (`saol_ce`, `ss1`, `ss2`, `sd`,
           `gap_ce`, `total`), `train/<head>_top1|top5` (on the mixed
           images, against the first label), `train/lr`, `train/grad_norm`,
           `train/img_per_s`;
  eval:    `eval/<head>_top1`, `eval/<head>_top5`, `eval/<head>_loss` for
           head in {saol, gap}, `eval/count` (examples evaluated);
           on a dataset with true boxes (saol_jax.core.localisation), for map in
           {attention, spatial, product} (SAOL) and cam (GAP-FC), each of
           the true class: `eval/loc_<map>_pointing`,
           `eval/loc_<map>_mass_ratio`, and over a sweep of box thresholds
           (at the split's own best ones; the final test line of a run with
           a validation split at those the validation split chose)
           `eval/loc_<map>_maxboxacc_v2`,
           `eval/loc_<map>_maxboxacc_<level>` and
           `eval/loc_<map>_threshold_<level>` (level 30, 50, 70: IoU 0.3,
           0.5, 0.7; GT-known localisation is `maxboxacc_50`), and at the
           IoU-0.5 threshold `eval/loc_<map>_top1_loc` and `eval/loc_<map>_iou`;
           with a SAOL head, how its maps follow the pasted box on CutMix'ed
           eval images (saol_jax.core.cutmix_eval; a check of label mixing, not
           localisation): `eval/cutmix_partner_iou`,
           `eval/cutmix_att_mass_in_box`, `eval/cutmix_box_area_share`,
           `eval/cutmix_att_box_concentration`.
  val:     the eval keys with the prefix `val/` instead of `eval/`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping

import jax
import tqdm

from saol_jax.core import paths

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def read_events(workdir: str) -> list[dict]:
    """The events of `workdir/metrics.jsonl`, oldest first; [] if there is none.

    A last line cut off by a crash is ignored, so a reader never fails on it.
    """
    path = paths.join(workdir, METRICS_FILE)
    if not paths.exists(path):
        return []
    events = []
    for line in paths.read_text(path).splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def final_eval(events: list[dict], step: int, kind: str = "eval") -> dict[str, float] | None:
    """The `<kind>/*` values of the last `kind` event ("eval": test, "val": validation) at `step`, or None."""
    for event in reversed(events):
        if event.get("event") == kind and event.get("step") == step:
            return {k: v for k, v in event.items() if k.startswith(f"{kind}/")}
    return None


class MetricWriter:
    """Writes events to `workdir/metrics.jsonl` and TensorBoard event files.

    Created at the step a run starts or resumes from: events logged after
    that step by an earlier, interrupted attempt are dropped from
    metrics.jsonl and purged from TensorBoard's view, so both describe the
    training that the checkpoints hold.
    """

    def __init__(self, workdir: str, *, start_step: int = 0, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._start = time.time()
        self._path = paths.join(workdir, METRICS_FILE)
        self._tb = None
        self.events: list[dict] = []
        if self.enabled:
            self.events = [e for e in read_events(workdir) if e.get("step", 0) <= start_step]
            self._rewrite()
            self._tb = _TensorBoard(paths.join(workdir, "tensorboard"), resumed_at=start_step)

    def write(self, event: str, step: int, values: Mapping[str, float], **extra: float | str) -> None:
        if not self.enabled:
            return
        record = {"event": event, "step": int(step), "time": round(time.time() - self._start, 3)}
        record.update(extra)
        record.update({k: float(v) for k, v in values.items()})
        self.events.append(record)
        line = json.dumps(record, allow_nan=True) + "\n"
        if paths.is_url(self._path):  # object stores cannot append: rewrite the (small) file
            self._rewrite()
        else:
            paths.append_text(self._path, line)
        self._tb.write(step, {k: float(v) for k, v in values.items() if _finite(v)})

    def _rewrite(self) -> None:
        paths.write_text(self._path, "".join(json.dumps(e, allow_nan=True) + "\n" for e in self.events))

    def close(self) -> None:
        if self.enabled:
            self._tb.close()


def _finite(value: float) -> bool:
    return math.isfinite(float(value))


class _TensorBoard:
    """Scalar summaries in TensorBoard event files, written with the tensorboard package's writer.

    A run resumed at step s first writes a SessionLog START event at step
    s + 1: TensorBoard then drops the points an interrupted attempt logged
    past s (its orphaned-data purge), so the curves describe the checkpoints.
    """

    def __init__(self, logdir: str, *, resumed_at: int = 0):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary = event_pb2, summary_pb2
        self._writer = EventFileWriter(logdir)
        if resumed_at > 0:
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=resumed_at + 1, session_log=start))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        values = [self._summary.Summary.Value(tag=name, simple_value=value) for name, value in scalars.items()]
        summary = self._summary.Summary(value=values)
        self._writer.add_event(self._event.Event(wall_time=time.time(), step=int(step), summary=summary))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class Progress:
    """Progress over optimiser steps (process 0): a bar on a terminal, and a text line
    per `update` in the log, so runs without a TTY (SLURM, TPU VMs) show progress in
    their log files too."""

    def __init__(self, total_steps: int, initial_step: int, *, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._total = total_steps
        self._first_step, self._first_time = initial_step, time.time()
        self._bar = tqdm.tqdm(
            total=total_steps,
            initial=initial_step,
            unit="step",
            dynamic_ncols=True,
            disable=not self.enabled,
            mininterval=2.0,
        )

    def update(self, step: int, **fields: float) -> None:
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in fields.items()}, refresh=False)
        self._bar.update(step - self._bar.n)
        if self.enabled:
            log.info("%s", self.line(step, **fields))

    def line(self, step: int, **fields: float) -> str:
        """'step 200/1638 (12%) epoch=0.43 loss=1.23 img_s=519 eta 4m10s'."""
        done = step - self._first_step
        elapsed = time.time() - self._first_time
        eta = _duration(elapsed / done * (self._total - step)) if done > 0 else "?"
        shown = " ".join(f"{k}={v:.4g}" for k, v in fields.items())
        return f"step {step}/{self._total} ({100 * step / max(self._total, 1):.0f}%) {shown} eta {eta}"

    def close(self) -> None:
        self._bar.close()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
