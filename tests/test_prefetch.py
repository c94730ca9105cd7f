"""DevicePrefetcher: order and contents kept, errors re-raised, the thread gone after errors and close()."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from saol_jax.core import sharding
from saol_jax.core.prefetch import DevicePrefetcher


def host_batches(count: int | None, seed: int = 0):
    """`count` (None: endless) distinct host batches {'image' uint8 [8, 4, 4, 3], 'label' int32 [8]}."""
    rng = np.random.default_rng(seed)
    for index in itertools.count() if count is None else range(count):
        yield {"image": rng.integers(0, 256, (8, 4, 4, 3), dtype=np.uint8),
               "label": np.full((8,), index, np.int32)}


def test_order_and_contents_are_unchanged():
    mesh = sharding.make_mesh()
    expected = list(host_batches(7))
    with DevicePrefetcher(host_batches(7), lambda b: sharding.global_batch(b, mesh), depth=2) as batches:
        got = list(batches)
        assert not batches.running
    assert len(got) == len(expected)
    for placed, host in zip(got, expected):
        assert isinstance(placed["image"], jax.Array)
        assert placed["image"].sharding == sharding.batch_sharded(mesh)
        np.testing.assert_array_equal(np.asarray(placed["image"]), host["image"])
        np.testing.assert_array_equal(np.asarray(placed["label"]), host["label"])


def failing_after(count: int, error: Exception):
    yield from host_batches(count)
    raise error


@pytest.mark.parametrize("where", ["source", "place"])
def test_an_error_is_reraised_in_order_and_the_thread_ends(where):
    error = RuntimeError("broken record")
    if where == "source":
        prefetcher = DevicePrefetcher(failing_after(3, error), lambda b: b)
    else:
        def place(batch):
            if batch["label"][0] == 3:
                raise error
            return batch
        prefetcher = DevicePrefetcher(host_batches(None), place)
    labels = []
    with pytest.raises(RuntimeError, match="broken record") as raised:
        for batch in prefetcher:
            labels.append(int(batch["label"][0]))
    assert raised.value is error
    assert labels == [0, 1, 2]
    assert not prefetcher.running
    with pytest.raises(StopIteration):
        next(prefetcher)


def test_close_stops_an_endless_source_and_the_producer_stays_bounded():
    produced = []

    def source():
        for batch in host_batches(None):
            produced.append(batch)
            yield batch

    prefetcher = DevicePrefetcher(source(), lambda b: b, depth=2)
    first = next(prefetcher)
    assert int(first["label"][0]) == 0
    prefetcher.close()
    assert not prefetcher.running
    # One consumed, at most `depth` queued and one being placed when close() came.
    assert len(produced) <= 1 + 2 + 1
    with pytest.raises(StopIteration):
        next(prefetcher)


def test_leaving_the_with_block_on_an_exception_stops_the_thread():
    class Preempted(Exception):
        pass

    with pytest.raises(Preempted):
        with DevicePrefetcher(host_batches(None), lambda b: b) as prefetcher:
            for step, _ in enumerate(prefetcher):
                if step == 2:
                    raise Preempted
    assert not prefetcher.running


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        DevicePrefetcher([], lambda b: b, depth=0)
