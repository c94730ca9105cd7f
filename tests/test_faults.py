"""Faults a cluster produces: one trainer per workdir, Ctrl-C that saves, failures that end the process
within a bound and in one line, and nothing silent about damaged checkpoints."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import orbax.checkpoint as ocp
import pytest

from commands import REPO, smoke_args, start_command
from saol_jax.core import checkpoint, faults, restore, trainer, workdir_lock
from saol_jax.core.trainer import Preempted, train_and_evaluate
from saol_jax.core.workdir_lock import WorkdirBusyError
from test_resume_safety import _truncate_largest_file
from test_trainer import read_metrics, tiny_config


@pytest.fixture(scope="module")
def finished(tiny_dataset, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    train_and_evaluate(tiny_config(tiny_dataset, eval_batch_size=16), workdir)
    return workdir


def _checkpoint_names(workdir: str) -> list[str]:
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


# ------------------------------------------------------------------ one writer per workdir


def test_second_trainer_on_a_busy_workdir_stops_and_leaves_the_running_save(tiny_dataset, tmp_path):
    workdir = str(tmp_path / "w")
    in_flight = os.path.join(workdir, "checkpoints", "58.orbax-checkpoint-tmp-1795000000")
    os.makedirs(in_flight)
    lock = workdir_lock.acquire(workdir)  # the first trainer
    try:
        with pytest.raises(WorkdirBusyError) as error:
            train_and_evaluate(tiny_config(tiny_dataset), workdir)
    finally:
        lock.release()
    message = str(error.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message and "\n" not in message
    assert os.path.isdir(in_flight)  # the first trainer's pending save is untouched
    assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))
    assert not os.path.exists(os.path.join(workdir, "lock"))  # released by its holder, not by the refused one


def _write_lock(workdir: str, **holder) -> None:
    now = time.time()
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": now, "heartbeat": now, **holder}
    with open(os.path.join(workdir, "lock"), "w", encoding="utf-8") as f:
        json.dump(record, f)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("holder, reason", [
    ({"pid": "dead"}, "is gone"),
    ({"host": "another-host", "heartbeat": time.time() - 2 * workdir_lock.STALE_S}, "last heartbeat was"),
], ids=["dead-process", "missed-heartbeats"])
def test_stale_lock_is_taken_over_with_a_line(tmp_path, caplog, holder, reason):
    if holder.get("pid") == "dead":
        holder = {"pid": _dead_pid()}
    _write_lock(str(tmp_path), **holder)
    lock = workdir_lock.acquire(str(tmp_path))
    try:
        with open(tmp_path / "lock", encoding="utf-8") as f:
            assert json.load(f)["pid"] == os.getpid()
    finally:
        lock.release()
    assert any("taking over the stale workdir lock" in r.message and reason in r.message for r in caplog.records)
    assert not (tmp_path / "lock").exists()


def test_live_lock_on_another_host_is_respected(tmp_path):
    _write_lock(str(tmp_path), host="another-host", pid=1)
    with pytest.raises(WorkdirBusyError, match="pid 1 on host another-host"):
        workdir_lock.acquire(str(tmp_path))
    assert (tmp_path / "lock").exists()


def test_the_heartbeat_keeps_a_long_run_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(workdir_lock, "HEARTBEAT_S", 0.05)
    lock = workdir_lock.acquire(str(tmp_path))
    try:
        time.sleep(1.0)
        with open(tmp_path / "lock", encoding="utf-8") as f:
            record = json.load(f)
    finally:
        lock.release()
    assert record["heartbeat"] > record["started"] + 0.5


def test_reading_tools_work_beside_a_live_run(finished, tiny_dataset):
    lock = workdir_lock.acquire(finished)  # a trainer is running on it
    try:
        trained = restore.load_trained(finished)
        assert trained.step == 4
        assert restore.saved_steps(finished) == [2, 4]
    finally:
        lock.release()


def test_two_trainers_started_on_one_workdir(tiny_dataset, tmp_path):
    workdir = str(tmp_path / "w")
    steps = ("--config.num_train_steps=40",)  # long enough for the second to start while it runs
    first = start_command("train", smoke_args(tiny_dataset, workdir, *steps))
    lock_file = os.path.join(workdir, "lock")
    deadline = time.time() + 240
    while time.time() < deadline and not os.path.exists(lock_file) and first.poll() is None:
        time.sleep(0.05)
    second = start_command("train", smoke_args(tiny_dataset, workdir, *steps))
    out2, _ = second.communicate(timeout=240)
    out1, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out1[-3000:]
    assert second.returncode != 0 and "Traceback" not in out2
    last = out2.strip().splitlines()[-1]
    assert last.startswith("error: another trainer is running on this workdir") and f"pid {first.pid}" in last
    events = [(e["event"], e["step"]) for e in read_metrics(workdir)]
    assert events == [("train", step) for step in range(2, 41, 2)] + [("val", 40), ("eval", 40)]


# ------------------------------------------------------------------ every failure ends the process, in one line


def test_watchdog_ends_a_process_whose_threads_hang(tmp_path):
    script = (
        "import threading, sys\n"
        "from saol_jax.core import faults\n"
        "threading.Thread(target=threading.Event().wait).start()  # never ends, like orbax's after a failed save\n"
        "faults.exit_within(3, 2.0)\n"
        "sys.exit('error: something the user must fix')\n"
    )
    started = time.time()
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    elapsed = time.time() - started
    assert proc.returncode == 3
    assert "error: something the user must fix" in proc.stderr
    assert elapsed < 60, elapsed  # imports, then the 2 s grace


def test_exception_in_a_background_thread_ends_the_process_in_one_line():
    script = (
        "import threading, time\n"
        "from saol_jax.core import faults\n"
        "faults.install_thread_hook()\n"
        "def fail():\n"
        "    raise RuntimeError('the reader lost its disk')\n"
        "threading.Thread(target=fail, name='reader').start()\n"
        "time.sleep(120)  # the main thread would go on training\n"
    )
    started = time.time()
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and time.time() - started < 100
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: background thread reader failed (RuntimeError: the reader lost its disk)")


def test_read_only_checkpoint_folder_is_one_line(tiny_dataset, tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(ocp.CheckpointManager, "save", read_only)
    workdir = str(tmp_path / "w")
    with pytest.raises(checkpoint.CheckpointWriteError) as error:
        train_and_evaluate(tiny_config(tiny_dataset), workdir)
    message = str(error.value)
    assert "Read-only file system" in message and "--workdir" in message and "\n" not in message
    assert isinstance(error.value, trainer.USER_ERRORS)
    with open(os.path.join(workdir, faults.LOG_FILE), encoding="utf-8") as f:
        assert "Traceback" in f.read()  # the details are in the workdir's log
    assert not os.path.exists(os.path.join(workdir, "lock"))


def test_log_file_closes_without_raising_on_a_full_disk(tmp_path):
    class FullDisk:
        def write(self, text):
            return len(text)

        def flush(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self):
            self.flush()

    handler = faults.log_file(str(tmp_path))
    handler.stream.close()
    handler.stream = FullDisk()
    faults.close_log_file(handler)  # a raise here would hide the run's own error behind this one
    assert handler not in logging.getLogger().handlers


def test_native_code_printing_an_error_off_the_main_thread_writes_to_the_log_only(tmp_path):
    # PyRun_SimpleString prints its error with PyErr_Print, as tensorstore does from orbax's threads.
    script = (
        "import ctypes, threading\n"
        "from saol_jax.core import faults\n"
        "faults.install_thread_hook()\n"
        f"handler = faults.log_file({str(tmp_path)!r})\n"
        "native = lambda text: ctypes.pythonapi.PyRun_SimpleString(text.encode())\n"
        "worker = threading.Thread(target=native, args=(\"raise RuntimeError('loop closed, off main')\",))\n"
        "worker.start(); worker.join()\n"
        "native(\"raise RuntimeError('on the main thread')\")\n"
        "faults.close_log_file(handler)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "off main" not in proc.stderr and "RuntimeError: on the main thread" in proc.stderr
    with open(os.path.join(tmp_path, faults.LOG_FILE), encoding="utf-8") as f:
        assert "RuntimeError: loop closed, off main" in f.read()


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def small_filesystem():
    """A 3 MB tmpfs, unmounted afterwards; skipped where this user cannot mount one."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tempfile.mkdtemp(prefix="saol_tmpfs_")
    try:
        _mount("-t", "tmpfs", "-o", "size=3m", "tmpfs", mountpoint)
    except subprocess.CalledProcessError as error:
        os.rmdir(mountpoint)
        pytest.skip(f"cannot mount a tmpfs here: {error.stderr.strip()}")
    yield mountpoint
    subprocess.run(["umount", "-l", mountpoint], check=False)
    os.rmdir(mountpoint)


def _run_until_error(tiny_dataset, workdir: str, *extra: str) -> tuple[str, float]:
    """Runs the trainer; returns its output and the seconds between its `error:` line and its exit."""
    proc = start_command("train", smoke_args(tiny_dataset, workdir, *extra))
    lines, error_at = [], None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("error:") and error_at is None:
            error_at = time.time()
    proc.wait(timeout=300)
    out = "".join(lines)
    assert proc.returncode not in (0, None), out[-3000:]
    assert error_at is not None, out[-3000:]
    return out, time.time() - error_at


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_real_write_failure_ends_in_one_line_within_the_bound(tiny_dataset, small_filesystem, fault):
    workdir = os.path.join(small_filesystem, "w")
    os.makedirs(os.path.join(workdir, "checkpoints"))
    if fault == "read-only":
        folder = os.path.join(workdir, "checkpoints")
        _mount("--bind", folder, folder)
        _mount("-o", "remount,bind,ro", folder)
        phrase = "Read-only file system"
    else:  # leave about 100 kB: the small files fit, a checkpoint does not
        filler = os.path.join(small_filesystem, "filler")
        stat = os.statvfs(small_filesystem)
        with open(filler, "wb") as f:
            f.write(b"\0" * max(stat.f_bavail * stat.f_frsize - 100_000, 0))
        phrase = "No space left on device"
    try:
        out, seconds = _run_until_error(tiny_dataset, workdir)
    finally:
        if fault == "read-only":
            subprocess.run(["umount", os.path.join(workdir, "checkpoints")], check=False)
    assert seconds < faults.SHUTDOWN_GRACE_S + 15, seconds
    assert "Traceback" not in out, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("error:") and phrase in last and "--workdir" in last, out[-3000:]


# ------------------------------------------------------------------ Ctrl-C is a pre-emption


@pytest.fixture
def sigint_from_a_terminal():
    """Ctrl-C as a terminal delivers it, also where pytest itself runs in the background (which ignores
    SIGINT, and the trainer then rightly leaves it ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _signalling_step(monkeypatch, at_call: int, times: int = 1) -> None:
    """The train step sends this process SIGINT `times` times during its `at_call`-th call."""
    real = trainer.make_train_step
    calls = []

    def make(*args, **kwargs):
        step = real(*args, **kwargs)

        def wrapped(*step_args):
            calls.append(1)
            if len(calls) == at_call:
                for _ in range(times):
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.05)  # the handler runs between the two
            return step(*step_args)
        return wrapped

    monkeypatch.setattr(trainer, "make_train_step", make)


@pytest.mark.usefixtures("sigint_from_a_terminal")
def test_first_sigint_mid_step_saves_at_the_step_boundary(tiny_dataset, tmp_path, monkeypatch):
    _signalling_step(monkeypatch, at_call=3)
    workdir = str(tmp_path / "w")
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Preempted, match="pre-empted at step 3; the checkpoint is saved"):
        train_and_evaluate(tiny_config(tiny_dataset), workdir)
    assert _checkpoint_names(workdir) == ["2", "3"]
    assert signal.getsignal(signal.SIGINT) is before  # the handler is handed back


@pytest.mark.usefixtures("sigint_from_a_terminal")
def test_second_sigint_stops_at_once(tiny_dataset, tmp_path, monkeypatch):
    _signalling_step(monkeypatch, at_call=1, times=2)
    workdir = str(tmp_path / "w")
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(tiny_config(tiny_dataset), workdir)
    assert _checkpoint_names(workdir) == []
    assert not os.path.exists(os.path.join(workdir, "lock"))


@pytest.mark.usefixtures("sigint_from_a_terminal")
def test_sigint_during_a_save_completes_it(tiny_dataset, tmp_path, monkeypatch):
    real_save = checkpoint.Checkpointer.save

    def save_then_interrupt(self, step, state):
        real_save(self, step, state)  # asynchronous: still being written
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", save_then_interrupt)
    workdir = str(tmp_path / "w")
    with pytest.raises(Preempted, match="pre-empted at step 3"):  # the next step boundary
        train_and_evaluate(tiny_config(tiny_dataset), workdir)
    assert _checkpoint_names(workdir) == ["2", "3"]  # both committed, no temporary folder left
    assert restore.saved_steps(workdir) == [2, 3]


def test_notice_during_the_final_evaluation_stops_the_caller_with_the_run_complete(tiny_dataset, tmp_path,
                                                                                 monkeypatch):
    real_evaluate = trainer._Run.evaluate

    def evaluate_then_terminate(self, step, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the loop has ended: only the flag is set
        return real_evaluate(self, step, *args, **kwargs)

    monkeypatch.setattr(trainer._Run, "evaluate", evaluate_then_terminate)
    workdir = str(tmp_path / "w")
    config = tiny_config(tiny_dataset)
    with pytest.raises(Preempted, match="during the final evaluation: the run in .* is complete and saved"):
        train_and_evaluate(config, workdir)
    saved = restore.saved_steps(workdir)
    monkeypatch.setattr(trainer._Run, "evaluate", real_evaluate)
    assert train_and_evaluate(config, workdir)  # the rerun only reports: nothing was lost
    assert restore.saved_steps(workdir) == saved


# ------------------------------------------------------------------ nothing silent


def test_all_checkpoints_damaged_says_it_starts_from_scratch_and_bounds_the_damaged(
        finished, tiny_dataset, tmp_path, caplog):
    workdir = str(tmp_path / "run")
    shutil.copytree(finished, workdir)
    folder = os.path.join(workdir, "checkpoints")
    os.makedirs(os.path.join(folder, "1.damaged"))  # set aside by an earlier attempt
    for step in ("2", "4"):
        _truncate_largest_file(os.path.join(folder, step))
    train_and_evaluate(tiny_config(tiny_dataset, eval_batch_size=16), workdir)
    messages = [r.getMessage() for r in caplog.records]
    assert any("no usable checkpoint is left" in m and "starts from scratch at step 0" in m for m in messages)
    assert any("removing the damaged checkpoint 1.damaged" in m for m in messages)
    names = _checkpoint_names(workdir)
    assert [n for n in names if "damaged" in n] == ["2.damaged", "4.damaged"]
    assert "4" in names
