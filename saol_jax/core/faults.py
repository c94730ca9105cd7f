"""How a command line ends and what it prints: one `error:` line, details in a log file, no hang.

- The console shows saol_jax's own lines; other libraries' logs and Python
  warnings (orbax's tracebacks of a failed save, deprecation notices) go
  only to the workdir's log file, unless `--verbosity=1` or more.
- `log_file(workdir)` copies every record, tracebacks included, to
  `WORKDIR/train.log` (`train.<process>.log` on other processes).
- `exit_within(status)`: once the main function has ended, a daemon
  watchdog ends the process with its status after SHUTDOWN_GRACE_S even if
  a library thread (orbax's save threads after a write error, a lost peer)
  would block interpreter shutdown forever.
- An exception in a background thread ends the process at once with one line.
- `last_line(message, workdir)`: prints the final `error:` line, then sends
  whatever library threads print while the process winds down (asyncio
  loops closed under a failed save, say) to the log file, so the line stays
  the last one on the console.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback

import jax

from saol_jax.core import paths

SHUTDOWN_GRACE_S = 30.0
LOG_FILE = "train.log"

# Failure details (tracebacks) for the log file; shown on the console only when verbose.
details = logging.getLogger("saol_jax.details")
details.addHandler(logging.NullHandler())  # never logging's last-resort printer: no handler, no output

_FORMAT = "%(levelname)s %(name)s: %(message)s"


class _ConsoleFilter(logging.Filter):
    """saol_jax's lines (not its details); everything at WARNING and above when verbose."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == "saol_jax" or record.name.startswith("saol_jax.")
        if ours and not record.name.startswith(details.name):
            return True
        return self.verbose and record.levelno >= logging.WARNING


def configure_console(verbosity: int) -> None:
    """Routes logging to stderr as described above; `verbosity` >= 1 shows other libraries too."""
    root = logging.getLogger()
    for handler in list(root.handlers):  # absl's handler prints every library's tracebacks
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(_FORMAT))
    console.addFilter(_ConsoleFilter(verbose=verbosity >= 1))
    root.addHandler(console)
    root.setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    logging.captureWarnings(True)  # Python warnings become log records: the file only, by default


def log_file(workdir: str) -> logging.Handler | None:
    """Starts copying every log record to the workdir's log file; None for object-store workdirs."""
    if paths.is_url(workdir):
        return None
    index = jax.process_index()
    name = LOG_FILE if index == 0 else LOG_FILE.replace(".log", f".{index}.log")
    handler = _QuietFileHandler(os.path.join(workdir, name), encoding="utf-8")
    handler.setFormatter(logging.Formatter(f"%(asctime)s {_FORMAT}"))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    _LOG_FILES.append(handler)
    return handler


class _QuietFileHandler(logging.FileHandler):
    """A log file that a full or read-only disk silences instead of printing logging's own tracebacks."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # the last flush on a full disk: those records are lost, the run's own error is not
            pass


def close_log_file(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        if handler in _LOG_FILES:
            _LOG_FILES.remove(handler)
        handler.close()


def log_path(workdir: str) -> str:
    """Where `log_file` writes process 0's records, for the error lines to point at."""
    return paths.join(workdir, LOG_FILE)


def exit_status(error: BaseException | None) -> int:
    """The status the interpreter would exit with after `error` (None: success)."""
    if error is None:
        return 0
    if isinstance(error, SystemExit):
        code = error.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    if isinstance(error, KeyboardInterrupt):
        return 130
    return 1


def last_line(message: str, workdir: str | None) -> None:
    """Prints `message` to stderr, then points stdout and stderr at the workdir's log file (or
    nowhere, where it cannot be opened) for the rest of the process."""
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    try:
        if not workdir or paths.is_url(workdir):
            raise OSError("no local workdir")
        sink = os.open(os.path.join(workdir, LOG_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    except OSError:
        sink = os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 1)
    os.dup2(sink, 2)
    os.close(sink)


def exit_within(status: int, seconds: float = SHUTDOWN_GRACE_S) -> threading.Thread:
    """Ends the process with `status` after `seconds` unless it has exited by then.

    A daemon thread: it keeps running while the interpreter waits in its
    shutdown for non-daemon threads that may never end (orbax's).
    """

    def watchdog() -> None:
        threading.Event().wait(seconds)
        # Not printed by default: the output must end with the line that says what happened.
        details.warning("the process did not end within %.0f s of finishing (a library thread hung); "
                        "exiting with status %d", seconds, status)
        _flush_and_exit(status)

    thread = threading.Thread(target=watchdog, name="exit-watchdog", daemon=True)
    thread.start()
    return thread


def _flush_and_exit(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()
    os._exit(status)


def install_thread_hook() -> None:
    """An uncaught exception in any thread ends the process with one line (details in the log)."""

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        details.error("exception in thread %s", getattr(args.thread, "name", "?"),
                      exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
        first = traceback.format_exception_only(args.exc_type, args.exc_value)[-1].strip()
        print(f"error: background thread {getattr(args.thread, 'name', '?')} failed ({first}); details in "
              "the workdir's train.log. Re-running the same command resumes from the newest checkpoint",
              file=sys.stderr)
        _flush_and_exit(1)

    threading.excepthook = hook
    sys.excepthook = _library_threads_to_log
    if not isinstance(sys.stderr, _NativeThreadsAside):
        sys.stderr = _NativeThreadsAside(sys.stderr)


def _library_threads_to_log(exc_type, exc_value, exc_traceback) -> None:
    """sys.excepthook, but what a native library reports from a thread other than the main one goes
    to the log file. Python threads' own errors reach threading.excepthook, never this hook: off
    the main thread it is only called by native code printing an error it will not raise
    (tensorstore completing a write into an event loop that a failed save closed), which may run
    on a thread Python started (orbax's), so `_NativeThreadsAside` alone does not catch it."""
    if threading.current_thread() is threading.main_thread():
        sys.__excepthook__(exc_type, exc_value, exc_traceback)
    else:
        _to_log_files("".join(traceback.format_exception(exc_type, exc_value, exc_traceback)))


class _NativeThreadsAside:
    """sys.stderr for the console, but what a native library's own threads print there (tensorstore
    completing a write into orbax's event loop after a failed save closed it prints a traceback per
    pending write) goes to the workdir's log file instead, written directly (no logging lock taken
    on a thread Python does not own), or nowhere before the log file is open."""

    def __init__(self, console) -> None:
        self._console = console

    def write(self, text: str) -> int:
        if isinstance(threading.current_thread(), threading._DummyThread):  # noqa: SLF001 - not started by Python
            _to_log_files(text)
            return len(text)
        return self._console.write(text)

    def __getattr__(self, name: str):
        return getattr(self._console, name)


_LOG_FILES: list[logging.FileHandler] = []


def _to_log_files(text: str) -> None:
    """Writes `text` straight to the open log files (no logging lock: the caller may be a thread
    Python does not own); a full disk or a closed file drops it, the console stays clean."""
    for handler in _LOG_FILES:
        try:
            handler.stream.write(text)
        except (OSError, ValueError, AttributeError):
            pass
