"""Requests are isolated from each other inside the batcher: a poisoned input fails only its own
request, a big request is split so small ones interleave, an abandoned request stops, the queue
sheds on expected wait, and freed memory is handed back under unbroken load."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from distilmarco.errors import BackendError, NonFiniteOutputError
from distilmarco.server.batching import MicroBatcher, QueueFullError

POISON = 666  # a token id the fake model overflows on


class Model:
    """embed() -> rows [first token id, real length]; NaN for rows holding ``POISON``; raises
    for the whole call when a row holds ``BREAK``; can be held on a gate; records calls."""

    BREAK = 999

    def __init__(self, hold: bool = False, delay: float = 0.0) -> None:
        self.gate = threading.Event()
        if not hold:
            self.gate.set()
        self.entered = threading.Event()
        self.delay = delay
        self.calls: list[list[int]] = []  # the first token of every row, per call

    def embed(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(10)
        if self.delay:
            time.sleep(self.delay)
        self.calls.append(ids[:, 0].tolist())
        if (ids == self.BREAK).any():
            raise BackendError("the kernel failed")
        out = np.stack([ids[:, 0], mask.sum(1)], axis=1).astype(np.float32)
        out[(ids == POISON).any(axis=1)] = np.nan
        return out


def ids_of(*firsts: int, length: int = 4) -> list[np.ndarray]:
    return [np.array([f] + [7] * (length - 1), dtype=np.int64) for f in firsts]


def started(model: Model, **kw) -> MicroBatcher:  # type: ignore[no-untyped-def]
    b = MicroBatcher(model.embed, pad_id=0, **kw)
    b.start()
    return b


def test_a_poisoned_input_fails_only_its_own_request() -> None:
    model = Model(hold=True)
    b = started(model, max_wait_s=0.0)
    b.submit(ids_of(1))
    assert model.entered.wait(5)
    innocent = [b.submit(ids_of(10 + i, 20 + i)) for i in range(6)]
    poisoned = b.submit(ids_of(5, POISON, 6, POISON))
    more = [b.submit(ids_of(30 + i)) for i in range(6)]
    model.gate.set()
    for i, f in enumerate(innocent):
        np.testing.assert_array_equal(f.result(5), [[10 + i, 4], [20 + i, 4]])
    for i, f in enumerate(more):
        np.testing.assert_array_equal(f.result(5), [[30 + i, 4]])
    with pytest.raises(NonFiniteOutputError, match=r"input\(s\) 1, 3 of this request") as info:
        poisoned.result(5)
    assert info.value.positions == (1, 3)
    # the innocent rows shared the poisoned call: they were computed again, without it
    assert POISON not in model.calls[-1] and 10 in model.calls[-1]
    b.close()


def test_an_input_that_breaks_the_call_fails_only_its_request() -> None:
    model = Model(hold=True)
    b = started(model, max_wait_s=0.0)
    b.submit(ids_of(1))
    assert model.entered.wait(5)
    good = [b.submit(ids_of(10 + i)) for i in range(4)]
    bad = b.submit(ids_of(Model.BREAK))
    model.gate.set()
    with pytest.raises(BackendError, match="kernel failed"):
        bad.result(5)
    assert [f.result(5).tolist() for f in good] == [[[10 + i, 4]] for i in range(4)]
    b.close()


def test_a_big_request_is_split_so_a_small_one_runs_next() -> None:
    model = Model(hold=True)
    b = started(model, run_tokens=40, max_wait_s=0.0)
    big = b.submit(ids_of(*range(100, 200), length=4))  # 400 tokens: ten steps of 40
    assert model.entered.wait(5)
    small = b.submit(ids_of(5))
    model.gate.set()
    np.testing.assert_array_equal(small.result(5), [[5, 4]])
    np.testing.assert_array_equal(big.result(5)[:, 0], np.arange(100, 200))
    b.close()
    # the small request rode in the second step, not after the ten of the big one
    second = model.calls[1]
    assert 5 in second and len(second) == 10, model.calls
    assert sum(len(c) for c in model.calls) == 101


def test_a_cancelled_request_leaves_the_queue_and_stops_at_the_next_step() -> None:
    model = Model(hold=True)
    b = started(model, run_tokens=40, max_wait_s=0.0)
    running = b.submit(ids_of(*range(100, 200)))  # ten steps
    assert model.entered.wait(5)
    queued = b.submit(ids_of(*range(300, 350)))
    assert b.queued_tokens == 360 + 200  # 90 rows of the first still waiting, 50 of the second
    b.cancel(queued)
    assert b.queued_tokens == 360 and b.depth == 1
    b.cancel(running)  # its first step is being computed
    model.gate.set()
    after = b.submit(ids_of(7))
    np.testing.assert_array_equal(after.result(5), [[7, 4]])
    b.close()
    assert running.cancelled() and queued.cancelled()
    firsts = [f for call in model.calls for f in call]
    assert not any(300 <= f < 350 for f in firsts)  # the queued one never ran
    assert sum(100 <= f < 200 for f in firsts) == 10  # the running one stopped after one step
    assert b.queued_tokens == 0 and b.depth == 0


def test_queue_sheds_on_expected_wait() -> None:
    model = Model(hold=True)
    b = started(model, run_tokens=40, max_queue_wait_s=0.98, max_wait_s=0.0)
    b._tokens_per_s = 100.0  # measured throughput: 100 tokens a second
    b.submit(ids_of(1))
    assert model.entered.wait(5)
    # the running step's 4 tokens, 23 queued requests of 4 and its own 4: 1 s until answered
    accepted = [b.submit(ids_of(10 + i)) for i in range(23)]
    with pytest.raises(QueueFullError, match=r"would wait about 1\.0 s") as info:
        b.submit(ids_of(99))
    assert info.value.retry_after == 1
    assert b.queued_tokens == 92
    # one text behind a huge request waits only for its share of each step: accepted
    other = MicroBatcher(model.embed, pad_id=0, run_tokens=40, max_queue_wait_s=0.98)
    other._tokens_per_s = 100.0
    other.submit(ids_of(*range(1000)))  # 4,000 tokens: 40 s of work, not started
    assert other.submit(ids_of(5)) is not None  # waits for one step of 40 tokens, not 4,000
    model.gate.set()
    assert all(f.result(5).shape == (1, 2) for f in accepted)
    b.close()


def test_memory_is_released_under_unbroken_load(monkeypatch: pytest.MonkeyPatch) -> None:
    import distilmarco.server.batching as batching

    monkeypatch.setattr(batching, "RELEASE_EVERY_S", 0.05)
    released: list[int] = []
    model = Model(delay=0.02)
    b = started(model, run_tokens=8, max_wait_s=0.0, on_idle=lambda: released.append(b.depth))
    b.submit(ids_of(*range(100, 140))).result(10)  # 20 steps of 2 rows, never idle between
    b.close()
    assert any(depth > 0 for depth in released), released


def test_the_first_measured_speed_replaces_the_guess() -> None:
    model = Model(delay=0.1)
    b = started(model, max_wait_s=0.0)
    b.submit(ids_of(1, 2)).result(5)  # 8 tokens in about 0.1 s
    b.close()
    assert 20 < b.tokens_per_s < 100  # not the optimistic 2,000 tokens/s it starts from
