"""Command line: `python -m saol_jax.train --config configs/<recipe>.py[:options] --workdir DIR`.

Fields are overridden with `--config.<field>=<value>`; a misspelt field is
an error. Re-running the same command resumes from the workdir.

Several processes (hosts of a TPU slice, SLURM tasks, or processes started
by hand) run this same command; `saol_jax.core.distributed` joins them into one
run before any device is touched: detected on SLURM, GKE/Kubernetes and
Open MPI, forced with `--distributed=on` (Cloud TPU VM slices), or given
explicitly with `--coordinator_address=HOST:PORT --num_processes=N
--process_id=I` (or SAOL_COORDINATOR_ADDRESS / SAOL_NUM_PROCESSES /
SAOL_PROCESS_ID). The workdir (and the data) must be shared by every host.
"""

from __future__ import annotations

import json
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from saol_jax.commands import cli  # noqa: E402
from saol_jax.core import compilation_cache, distributed, faults, paths, sharding  # noqa: E402
from saol_jax.core.trainer import USER_ERRORS, train_and_evaluate  # noqa: E402


def define_flags() -> None:
    """Command-line flags; defined only when this module is the program."""
    config_flags.DEFINE_config_file("config", None, "Recipe file, e.g. configs/fashion_mnist.py[:options].",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the config; resumed if it exists.")
    flags.DEFINE_enum(
        "distributed", "auto", list(distributed.MODES),
        "Multi-process initialisation: auto (explicit settings or a detected cluster), on (always; jax "
        "detects the cluster, e.g. Cloud TPU VM slices), off (single process).",
    )
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for bare multi-process clusters.")
    flags.DEFINE_integer("num_processes", None, "Number of processes, for bare multi-process clusters.")
    flags.DEFINE_integer("process_id", None, "This process's index, for bare multi-process clusters.")
    flags.DEFINE_integer(
        "heartbeat_timeout", distributed.HEARTBEAT_TIMEOUT_S,
        "Seconds without a heartbeat after which a process counts as lost and the others exit non-zero.",
    )
    flags.DEFINE_string(
        "compilation_cache", compilation_cache.default_location(),
        f"Folder of jax's persistent compilation cache, so a restart does not recompile; '{compilation_cache.OFF}' "
        f"turns it off. Default: ${compilation_cache.ENV_VAR}, else {compilation_cache.DEFAULT_DIR}.",
    )
    flags.mark_flags_as_required(["config", "workdir"])


FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    """Trains; whatever happens, the process then ends within faults.SHUTDOWN_GRACE_S with the right status."""
    cli.arguments(argv)
    cli.configure_console()
    faults.install_thread_hook()
    failure = None
    try:
        _train()
    except SystemExit as error:
        failure = error
        if isinstance(error.code, str):  # the one `error:` line: the last thing the console shows
            faults.last_line(error.code, FLAGS.workdir and paths.resolve(FLAGS.workdir))
            failure = SystemExit(1)
            raise failure from None
        raise
    except BaseException as error:
        failure = error
        raise
    finally:
        faults.exit_within(faults.exit_status(failure))


def _train() -> None:
    config = FLAGS.config
    sharding.configure_cpu_devices(config.num_cpu_devices)
    compilation_cache.enable(FLAGS.compilation_cache)
    try:
        distributed.initialize(
            FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, mode=FLAGS.distributed,
            heartbeat_timeout_s=FLAGS.heartbeat_timeout,
        )
    except ValueError as error:
        sys.exit(f"error: {error}")
    logging.getLogger("saol_jax").info("%s", distributed.describe())
    try:
        results = train_and_evaluate(config, FLAGS.workdir)
    except USER_ERRORS as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted: stopped without saving the current step; re-running the same "
                         "command resumes from the newest checkpoint\n")
        raise SystemExit(130) from None
    except jax.errors.JaxRuntimeError as error:
        if jax.process_count() > 1:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            logging.getLogger("saol_jax").error(
                "a collective failed (%s): another process has probably died. This one exits non-zero "
                "once jax's coordination service confirms it, within --heartbeat_timeout=%d s; re-run "
                "every process to resume from the newest checkpoint", first_line, FLAGS.heartbeat_timeout)
        raise
    if results:
        print("final evaluation:", json.dumps({k: round(v, 4) for k, v in results.items()}))


run = cli.program(main, define_flags)  # console script saol-train

if __name__ == "__main__":
    run()
