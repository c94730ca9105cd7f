"""`train_and_evaluate(config, workdir)`: the whole training run, importable.

Re-running with the same workdir resumes from the newest complete
checkpoint, with the same data order and randomness, so a killed run that
is restarted ends where an uninterrupted one would.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from saol_jax import data
from saol_jax.core import checkpoint, evaluation, faults, optim, paths, profiling, run_identity, sharding, workdir_lock
from saol_jax.core.config_check import ConfigError, check_config, check_workdir
from saol_jax.core.metrics import MetricWriter, Progress, final_eval
from saol_jax.core.prefetch import DevicePrefetcher
from saol_jax.core.train_step import create_train_state, make_eval_step, make_train_step, output_grid, step_config
from saol_jax.models import build_model

log = logging.getLogger(__name__)

# The metrics.jsonl event (and metric prefix) of each evaluation role: test keeps `eval` for its readers.
EVENTS = {"validation": "val", "test": "eval"}


class NonFiniteLossError(FloatingPointError):
    """Raised when a logged loss is NaN or Inf; the last good checkpoint is kept."""


class Preempted(SystemExit):
    """Raised after a SIGTERM, SIGHUP or first SIGINT once the state is saved; the same command resumes."""


# Errors whose message tells the user what to do: the command lines print them in one line.
USER_ERRORS = (
    checkpoint.CheckpointRestoreError,
    checkpoint.CheckpointWriteError,
    ConfigError,
    run_identity.RunChangedError,
    workdir_lock.WorkdirBusyError,
    data.DatasetFormatError,
    data.DatasetNotFoundError,
    NonFiniteLossError,
)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains `config`'s model, evaluating periodically; returns the final evaluation's metrics.

    With a validation split (`dataset.validation_split`) the periodic
    evaluations read it alone (`val/*`, event "val" in metrics.jsonl) and
    the eval (test) split is read once, at the last step (`eval/*`, event
    "eval"); the final metrics hold both. Without one, the eval split is
    read at every evaluation, as `eval/*`.

    `workdir` may be relative, absolute or a URL (gs://...). A workdir whose
    run already finished is not trained again: the final evaluation is
    returned (and recomputed from the last checkpoint if it was not logged).
    Raises `config_check.ConfigError` for a config that cannot run (before
    anything is written), `workdir_lock.WorkdirBusyError` while another
    trainer runs on `workdir`. Every log record of the run, with the
    traceback of a failure, is also written to `workdir`'s train.log.
    """
    sharding.configure_cpu_devices(config.num_cpu_devices)
    run = _Run(_with_resolved_paths(config), paths.resolve(workdir))
    try:
        try:
            results = run.train()
        finally:
            run.close()
        if run.preemption_pending:
            raise Preempted(f"pre-emption notice during the final evaluation: the run in {run.workdir} is complete "
                            "and saved; re-run to go on")
        return results
    except Preempted:
        raise
    except BaseException:
        faults.details.error("the run in %s stopped", run.workdir, exc_info=True)
        raise
    finally:
        faults.close_log_file(run.log_handler)


def _with_resolved_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` whose user-given paths are absolute (or URLs): see saol_jax.core.paths."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.init_from = paths.resolve_optional(config.init_from)
    config.dataset.data_dir = paths.resolve_optional(config.dataset.data_dir)
    config.lock()
    return config


class _Run:
    """The state of one training run; `train()` is the loop."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config = config
        self.workdir = workdir
        self.mesh = sharding.make_mesh(config.num_devices or None)
        self.info = data.load_info(config.dataset)
        check_config(config, self.info, self.mesh.devices.size)
        check_workdir(workdir)
        # Held before the checkpoints are opened: orbax's start-up deletes unfinished saves.
        self.lock = workdir_lock.acquire(workdir)
        self.log_handler = faults.log_file(workdir)
        try:
            self._build()
        except BaseException:
            self.lock.release()
            faults.close_log_file(self.log_handler)
            raise

    def _build(self) -> None:
        """The model, optimiser, compiled steps and checkpointer of the run."""
        config, workdir = self.config, self.workdir
        self.batch_size = config.batch_size
        _, shares = data.read_shares(config.dataset)
        self.steps_per_epoch = data.steps_per_epoch(self.info, config.batch_size, process_count=shares)
        self.total_steps = (
            config.num_train_steps
            if config.num_train_steps > 0
            else int(math.ceil(config.num_epochs * self.steps_per_epoch))
        )

        model = build_model(
            config.model,
            num_classes=self.info.num_classes,
            in_channels=self.info.image_shape[2],
            rngs=nnx.Rngs(config.seed),
        )
        self.schedule = optim.learning_rate_schedule(
            config.optim,
            global_batch_size=config.batch_size,
            steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps,
        )
        tx = optim.optimizer(config.optim, self.schedule)
        graphdef, state = create_train_state(model, tx)
        model.eval()
        eval_graphdef = nnx.graphdef(model)
        self.state = _replicate(state, self.mesh)

        settings = step_config(config, output_grid(graphdef, state, self.info.image_shape), self.mesh.devices.size)
        self.train_step = make_train_step(graphdef, tx, self.schedule, settings, self.mesh)
        self.eval_step = make_eval_step(eval_graphdef, settings, self.mesh)
        self.key = _replicate(jax.random.key(config.seed), self.mesh)

        self.checkpointer = checkpoint.Checkpointer(
            paths.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints, clean_temporary=True
        )
        self.writer: MetricWriter | None = None
        self._preempted = False
        self._previous_handlers: dict[int, object] = {}

    # ----------------------------------------------------------------- setup
    def _restore_or_initialise(self) -> int:
        identity = run_identity.identity(
            self.config, num_devices=self.mesh.devices.size, num_processes=jax.process_count())
        if self.checkpointer.steps():
            run_identity.check_same_run(self.workdir, identity)
        if jax.process_index() == 0:
            run_identity.record(self.workdir, identity)
        restored = self.checkpointer.restore_latest(self.state)
        if restored is not None:
            step, self.state = restored
            log.info("resumed from checkpoint at step %d in %s", step, self.workdir)
            return step
        damaged = self.checkpointer.damaged()
        if damaged:
            log.warning("no usable checkpoint is left in %s (damaged and set aside: %s): training starts "
                        "from scratch at step 0", self.checkpointer.directory, ", ".join(damaged))
        else:
            log.info("no checkpoint in %s yet: training starts at step 0", self.checkpointer.directory)
        if self.config.init_from:
            params, batch_stats = checkpoint.load_weights(
                paths.join(self.config.init_from, "checkpoints"),
                self.state.params,
                self.state.batch_stats,
                init_heads=True,  # a head of another class count or kind starts fresh; logs what was loaded
            )
            self.state = self.state.replace(params=params, batch_stats=batch_stats)
        return 0

    def _save_config(self) -> None:
        if jax.process_index() == 0:
            paths.write_text(paths.join(self.workdir, "config.json"), self.config.to_json_best_effort(indent=2))

    def _install_signal_handlers(self) -> None:
        """One process: a SIGTERM, SIGHUP or SIGINT sets a flag the loop reads after each step.

        The loop then saves at that step boundary (a save already in flight
        is completed first) and exits. SIGHUP (the terminal or SSH session
        closed) and SIGINT (Ctrl-C) save like SIGTERM, unless they are
        ignored (nohup, as launch/tpu_pod.sh runs the trainer; a background
        job): that stays so. A second SIGINT aborts at once with
        KeyboardInterrupt, without saving. With several processes jax's
        preemption service (started by `jax.distributed.initialize`) owns
        SIGTERM instead; see `_preemption_requested`.
        """
        if jax.process_count() > 1:
            return

        def on_signal(signum, frame):
            name = signal.Signals(signum).name
            if signum == signal.SIGINT and self._preempted:
                log.warning("second SIGINT: stopping at once without saving")
                raise KeyboardInterrupt
            log.warning("%s received: saving a checkpoint at the end of this step, then exiting%s", name,
                        " (Ctrl-C again to stop at once without saving)" if signum == signal.SIGINT else "")
            self._preempted = True

        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            if signum != signal.SIGTERM and signal.getsignal(signum) is signal.SIG_IGN:
                continue  # nohup or a background job: the run is meant to outlive its terminal
            try:
                self._previous_handlers[signum] = signal.signal(signum, on_signal)
            except ValueError:  # not the main thread (e.g. some notebook kernels)
                return

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, float]:
        config = self.config
        start_step = self._restore_or_initialise()
        self.writer = MetricWriter(self.workdir, start_step=start_step)
        if start_step >= self.total_steps:
            return self._finished(start_step)
        self._save_config()
        self._install_signal_handlers()
        host_batches = data.host_train_batches(
            config.dataset, global_batch_size=self.batch_size, seed=config.seed, start_step=start_step
        )
        # The next batches are checked and placed on the devices while the current step runs.
        batches = DevicePrefetcher(host_batches, self._checked_global_batch, depth=2)
        eval_every = max(1, int(round(config.eval_every_epochs * self.steps_per_epoch)))
        progress = Progress(self.total_steps, start_step)
        tracer = profiling.StepTracer(
            paths.join(self.workdir, "tensorboard"), start_step=start_step,
            num_steps=config.profile_steps if jax.process_index() == 0 else 0,
        )
        pending: list[dict[str, jax.Array]] = []
        window_start, window_step = time.time(), start_step
        last_eval: dict[str, float] = {}
        step = start_step
        try:
            while step < self.total_steps:
                batch = next(batches)
                self.state, metrics = tracer.run(step, self.train_step, self.state, batch, self.key)
                pending.append(metrics)
                step += 1
                last = step == self.total_steps
                save_due = step % config.checkpoint_every_steps == 0 or last
                preempted = self._preemption_requested(step)
                if pending and (step % config.log_every_steps == 0 or save_due or preempted):
                    rate = (step - window_step) * self.batch_size / (time.time() - window_start)
                    values = self._log_train(step, pending, rate)
                    progress.update(step, epoch=step / self.steps_per_epoch, loss=values["loss/total"], img_s=rate)
                    pending = []
                    window_start, window_step = time.time(), step
                # Save before evaluating: a failing evaluation must not cost training, and a
                # pre-empted run has no time to spare for one.
                if save_due or preempted:
                    self._check_finite_parameters(step)
                    self.checkpointer.save(step, self.state)
                if preempted:
                    self.checkpointer.wait()
                    raise Preempted(f"pre-empted at step {step}; the checkpoint is saved, re-run to resume")
                if last:
                    last_eval = self.evaluate(step)
                elif step % eval_every == 0:
                    self._evaluate_split(step, "validation" if self.info.validation_split else "test")
        finally:
            tracer.stop()
            batches.close()
            progress.close()
        return last_eval

    def _checked_global_batch(self, host_batch: dict[str, np.ndarray], split: str = "training") -> dict[str, jax.Array]:
        """The global batch on the mesh; out-of-range labels (NaN losses much later) stop the run at this batch."""
        labels = host_batch["label"]
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.info.num_classes:
            raise data.DatasetFormatError(
                f"the {split} data has a batch with label {low if low < 0 else high}, "
                f"outside [0, {self.info.num_classes}): "
                f"the dataset's label feature declares {self.info.num_classes} classes; fix its ClassLabel "
                "or the labels"
            )
        return sharding.global_batch(host_batch, self.mesh)

    def _check_finite_parameters(self, step: int) -> None:
        """A checkpoint is only ever written with finite parameters and BN statistics."""
        if bool(_fetch(_all_finite((self.state.params, self.state.batch_stats)))):
            return
        steps = self.checkpointer.steps()
        kept = f"the newest checkpoint, step {steps[-1]}, is finite" if steps else "no checkpoint was saved"
        raise NonFiniteLossError(
            f"non-finite parameters after step {step}, so it was not saved; {kept}. "
            "Lower optim.lr or check the data."
        )

    def _finished(self, step: int) -> dict[str, float]:
        """A run that already reached its last step: its final evaluation, recomputed if not logged."""
        results = self.evaluate(step, reuse_logged=True)
        log.info("the run in %s is already complete (step %d of %d); nothing to train",
                 self.workdir, step, self.total_steps)
        return results

    @property
    def preemption_pending(self) -> bool:
        """A notice that came after the last step (during the final evaluation), so no loop acted on it:
        the caller (a ladder of runs) must stop rather than start the next run."""
        return self._preempted

    def _preemption_requested(self, step: int) -> bool:
        """True once this process got SIGTERM; with several processes, true on all of them at one step.

        Multi-process: jax's preemption service hears a SIGTERM sent to any
        process, agrees with the others in the background on the first step
        they have not all passed, and answers True there on every process.
        Asking costs no collective, so it is asked after every step.
        """
        if jax.process_count() == 1:
            return self._preempted
        from jax.experimental import multihost_utils

        if multihost_utils.reached_preemption_sync_point(step):
            log.warning("pre-emption notice: every process saves at step %d and exits", step)
            return True
        return False

    def _log_train(self, step: int, pending: list[dict[str, jax.Array]], img_per_s: float) -> dict[str, float]:
        fetched = _fetch(pending)
        values = {name: float(np.mean([m[name] for m in fetched])) for name in fetched[0]}
        bad = [name for name, value in values.items() if name.startswith("loss/") and not math.isfinite(value)]
        if bad:
            steps = self.checkpointer.steps()
            kept = f"the last good checkpoint is step {steps[-1]}" if steps else "no checkpoint was saved"
            raise NonFiniteLossError(
                f"non-finite {', '.join(bad)} between steps {step - len(pending)} and {step}; "
                f"{kept}. Lower optim.lr or check the data."
            )
        values["train/img_per_s"] = img_per_s
        self.writer.write("train", step, values, epoch=step / self.steps_per_epoch)
        return values

    def evaluate(self, step: int, reuse_logged: bool = False) -> dict[str, float]:
        """The final evaluation: the validation split (`val/*`) if the run has one, then the eval split
        (`eval/*`), whose box scores are taken at the thresholds the validation split chose.
        `reuse_logged`: a split whose final evaluation metrics.jsonl holds is not evaluated again."""
        results, thresholds = {}, None
        for role in data.roles(self.info):
            found = final_eval(self.writer.events, step, EVENTS[role]) if reuse_logged else None
            if found is None:
                if reuse_logged:
                    log.info("the run is complete at step %d; its final %s evaluation was not logged: "
                             "evaluating", step, role)
                found = self._evaluate_split(step, role, thresholds)
            if role == "validation":
                thresholds = evaluation.chosen_thresholds(found, prefix=EVENTS[role])
            results.update(found)
        return results

    def _evaluate_split(self, step: int, role: str, thresholds=None) -> dict[str, float]:
        """Top-1/top-5 and loss of both heads (and box scores, at `thresholds` if given, else at the
        split's own best; see `evaluation.metrics_from_sums`) over the whole split of `role` ('validation' |
        'test'), logged as event EVENTS[role] with that prefix and the split it read."""
        split, kind = data.roles(self.info)[role], EVENTS[role]
        host_batches = data.host_eval_batches(self.config.dataset, global_batch_size=self.config.eval_batch_size,
                                              split=split)
        batches = (self._checked_global_batch(b, "evaluation") for b in host_batches)
        results = evaluation.eval_metrics(self.eval_step, self.state.params, self.state.batch_stats, batches,
                                          fetch=_fetch, thresholds=thresholds)
        results = {f"{kind}/{name.split('/', 1)[1]}": value for name, value in results.items()}
        self.writer.write(kind, step, results, epoch=step / self.steps_per_epoch, split=split)
        log.info("%s at step %d on %s: %s", kind, step, split, _summary(results))
        return results

    def close(self) -> None:
        """Completes a pending save (signals still only set the flag), then lets go of the workdir."""
        try:
            self.checkpointer.close()
        finally:
            if self.writer is not None:
                self.writer.close()
            for signum, handler in self._previous_handlers.items():
                if handler is not None:
                    signal.signal(signum, handler)
            self._previous_handlers.clear()
            self.lock.release()


def _replicate(tree, mesh):
    """Places host values (the same on every process) replicated on `mesh`, which may span hosts.

    One jitted identity: unlike `jax.device_put` it needs no cross-host
    equality check per leaf and also takes PRNG key arrays.
    """
    return jax.jit(lambda t: t, out_shardings=sharding.replicated(mesh))(tree)


@jax.jit
def _all_finite(tree) -> jax.Array:
    """A scalar bool: every element of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _fetch(tree):
    """Host copies of replicated arrays. With several processes they are not fully
    addressable and `jax.device_get` fails: read this host's first shard instead."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def _summary(results: Mapping[str, float]) -> str:
    return json.dumps({k: round(v, 4) for k, v in results.items()})
