"""Several training runs at once, as separate processes sharing the machine's device(s).

`run_all` trains each job with `python -m saol_jax.studies.parallel_runs CONFIG RUN_DIR`
(the job's config pickled into CONFIG), at most `parallel` at a time, and
prints a line as each starts and ends. A run's console output goes to
`RUN_DIR.log` beside its workdir; a failed run is reported with the last line
of that output (its `error:` line) while the others go on. Each run resumes
and finishes as `train_and_evaluate` does in one process, and reads and
writes jax's persistent compilation cache (`saol_jax.core.compilation_cache`), so
the runs of one rung compile once.

On a GPU each process would by default reserve 75% of the device's memory;
where `XLA_PYTHON_CLIENT_MEM_FRACTION` is not set, each gets
`MEMORY_SHARE / parallel` of it instead.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import TextIO

import ml_collections

MEMORY_FRACTION_VAR = "XLA_PYTHON_CLIENT_MEM_FRACTION"
MEMORY_SHARE = 0.9  # of the device's memory, split between the processes
POLL_S = 0.5


@dataclasses.dataclass(frozen=True)
class Job:
    """One run: a name for the progress lines, its config and its workdir."""

    name: str
    config: ml_collections.ConfigDict
    run_dir: str


class RunsFailedError(RuntimeError):
    """Some runs failed (the others finished); the message has one line per failed run."""


@dataclasses.dataclass(frozen=True)
class Failure:
    """A run that ended with a non-zero status, and the last line it printed."""

    job: Job
    status: int
    line: str


def environment(parallel: int) -> dict[str, str]:
    """The runs' environment: this one, with a device memory share per process unless one is set."""
    env = dict(os.environ)
    env.setdefault(MEMORY_FRACTION_VAR, f"{MEMORY_SHARE / parallel:.3f}")
    return env


def log_path(job: Job) -> str:
    """Where a run's console output goes: beside its workdir."""
    return os.path.normpath(job.run_dir) + ".log"


def last_line(path: str) -> str:
    """The last non-empty line of a text file ('' if none)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1] if lines else ""


def _start(job: Job, config_path: str, env: dict[str, str]) -> subprocess.Popen:
    with open(config_path, "wb") as f:
        pickle.dump(job.config, f)
    os.makedirs(os.path.dirname(log_path(job)) or ".", exist_ok=True)
    with open(log_path(job), "w", encoding="utf-8") as log:
        return subprocess.Popen([sys.executable, "-m", __name__, config_path, job.run_dir],
                                stdout=log, stderr=subprocess.STDOUT, env=env)


def run_all(jobs: Sequence[Job], parallel: int, out: TextIO | None = None) -> list[Failure]:
    """Trains every job, at most `parallel` at once, progress to `out` (stdout); returns the ones that failed."""
    out = out or sys.stdout
    if parallel < 1:
        raise ValueError(f"--parallel must be at least 1, got {parallel}")
    env = environment(parallel)
    pending, running, failures, done = list(enumerate(jobs)), [], [], 0
    with tempfile.TemporaryDirectory(prefix="saol_runs_") as scratch:
        while pending or running:
            while pending and len(running) < parallel:
                number, job = pending.pop(0)
                proc = _start(job, os.path.join(scratch, f"{number}.pkl"), env)
                running.append((job, proc, time.perf_counter()))
                print(f"started {job.name} ({len(running)} running, {len(pending)} waiting); "
                      f"output in {log_path(job)}", file=out, flush=True)
            time.sleep(POLL_S)
            for entry in list(running):
                job, proc, start = entry
                status = proc.poll()
                if status is None:
                    continue
                running = [other for other in running if other is not entry]
                done += 1
                took = time.perf_counter() - start
                if status == 0:
                    print(f"[{done}/{len(jobs)}] {job.name}: done in {took:.0f} s", file=out, flush=True)
                else:
                    failures.append(Failure(job, status, last_line(log_path(job))))
                    print(f"[{done}/{len(jobs)}] {job.name}: FAILED (status {status}) after {took:.0f} s: "
                          f"{failures[-1].line}", file=out, flush=True)
    return failures


def train_all(jobs: Sequence[Job], parallel: int, out: TextIO | None = None) -> None:
    """`run_all`; RunsFailedError naming each failed run and its last line if any failed."""
    failures = run_all(jobs, parallel, out)
    if failures:
        raise RunsFailedError(f"{len(failures)} of {len(jobs)} runs failed (the others finished): " + "; ".join(
            f"{f.job.name} (see {log_path(f.job)}): {f.line}" for f in failures))


def main(argv: list[str]) -> int:
    """`python -m saol_jax.studies.parallel_runs CONFIG RUN_DIR`: trains (or resumes) one run."""
    from saol_jax.core import compilation_cache, faults
    from saol_jax.core.trainer import USER_ERRORS, train_and_evaluate

    config_path, run_dir = argv
    with open(config_path, "rb") as f:
        config = pickle.load(f)
    faults.configure_console(0)
    compilation_cache.enable(compilation_cache.default_location())
    status = 1
    try:
        train_and_evaluate(config, run_dir)
        status = 0
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
    finally:
        faults.exit_within(status)  # orbax's threads can keep a finished process alive
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
