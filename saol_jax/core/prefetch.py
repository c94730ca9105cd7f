"""Device prefetch: a host thread puts the next batches on the devices while the current step runs.

    with DevicePrefetcher(host_batches, lambda b: sharding.global_batch(b, mesh)) as batches:
        for batch in batches:
            state, metrics = train_step(state, batch, key)

`place` turns one host batch into global arrays (for instance
`sharding.global_batch`, which also works across hosts: each host places
its own slice). Batches come out in the order the source yields them. The
queue holds at most `depth` placed batches, so the host stays at most
`depth` steps ahead and device memory holds at most `depth + 1` batches
beyond the one in use. An exception raised by the source or by `place` is
re-raised in the consumer at the position where it occurred; `close()`
(also on leaving the `with` block, e.g. on an exception or pre-emption in
the train loop) stops the thread, waits for it and closes the source if it
has a `close` (a generator; the grain path's worker processes).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

HostBatch = TypeVar("HostBatch")
DeviceBatch = TypeVar("DeviceBatch")

_POLL_S = 0.05  # how often a blocked producer checks for close()


class _End:
    """Queued after the source's last batch."""


class _Failure:
    """Queued in place of a batch when the source or `place` raised."""

    def __init__(self, error: BaseException):
        self.error = error


class DevicePrefetcher(Generic[HostBatch, DeviceBatch], Iterator[DeviceBatch]):
    """Iterates over `place(b)` for each `b` in `source`, computed up to `depth` batches ahead in a thread."""

    def __init__(self, source: Iterable[HostBatch], place: Callable[[HostBatch], DeviceBatch], depth: int = 2):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._source = source
        self._place = place
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, name="device-prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for host_batch in self._source:
                if not self._put(self._place(host_batch)):
                    return
            self._put(_End())
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(_Failure(error))

    def _put(self, item: object) -> bool:
        """Blocks until `item` is queued (True) or close() is called (False)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> DevicePrefetcher[HostBatch, DeviceBatch]:
        return self

    def __next__(self) -> DeviceBatch:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, (_End, _Failure)):
            self._done = True
            self._thread.join()
            if isinstance(item, _Failure):
                raise item.error
            raise StopIteration
        return item

    def close(self) -> None:
        """Stops the producer thread and waits for it; batches not yet consumed are dropped."""
        self._done = True
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        self._thread.join()
        close_source = getattr(self._source, "close", None)  # a generator, or grain's workers
        if close_source is not None:
            close_source()

    @property
    def running(self) -> bool:
        """Whether the producer thread is alive."""
        return self._thread.is_alive()

    def __enter__(self) -> DevicePrefetcher[HostBatch, DeviceBatch]:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
