"""svae-eval's time estimate: its arithmetic on a fake clock (no timed assertions)."""

import logging

import numpy as np
import pytest
import torch

from fairseq_svae.evaluation import time_estimate
from fairseq_svae.evaluation.time_estimate import RunClock, shuffled_order

CPU = torch.device("cpu")


@pytest.fixture
def fake_clock(monkeypatch):
    """time.perf_counter as time_estimate sees it: now[0] seconds, set by the test."""
    now = [0.0]
    monkeypatch.setattr(time_estimate.time, "perf_counter", lambda: now[0])
    return now


def test_the_estimate_extrapolates_the_rate_measured_after_the_first_call(fake_clock, caplog):
    clock = RunClock(total_work=1000, total_flops=2e12, device=CPU, share=0.03)
    # The first call pays for the warm-up: 30 units in 5 s; after it, 10 units per second.
    fake_clock[0] = 5.0
    clock.update(30)
    assert clock.expected is None  # one call gives no rate, whatever share it covers
    fake_clock[0] = 7.0
    with caplog.at_level(logging.INFO, logger="fairseq_svae.evaluation"):
        clock.update(20)
        fake_clock[0] = 8.0
        clock.update(10)  # later updates keep the first estimate
    assert clock.expected == pytest.approx(5.0 + 970 / 10)
    assert clock.measured_share == pytest.approx(0.05)
    assert [record.getMessage() for record in caplog.records] == [
        "expected time: 1.7 min (measured on the first 5% of the work, done in 7.0 s; 19.6 GFLOP/s)"
    ]
    fake_clock[0] = 110.0
    assert clock.stop() == 110.0
    assert clock.expected == pytest.approx(102.0)


def test_the_estimate_waits_for_its_share_of_the_work(fake_clock):
    clock = RunClock(total_work=1000, total_flops=1e9, device=CPU, share=0.1)
    for second in range(1, 10):
        fake_clock[0] = float(second)
        clock.update(10)
    assert clock.expected is None  # 9% done
    fake_clock[0] = 10.0
    clock.update(10)
    assert clock.expected == pytest.approx(1.0 + 990 / 10) and clock.measured_share == pytest.approx(0.1)


def test_a_run_done_in_one_call_expects_its_own_time(fake_clock):
    clock = RunClock(total_work=500, total_flops=1e9, device=CPU)
    fake_clock[0] = 3.0
    clock.update(500)
    assert clock.stop() == 3.0
    assert (clock.expected, clock.measured_share) == (3.0, 1.0)


def test_batches_are_scored_in_a_seeded_order_of_all_of_them():
    order = shuffled_order(50, seed=4)
    assert sorted(order.tolist()) == list(range(50))
    assert np.array_equal(order, shuffled_order(50, seed=4))
    assert not np.array_equal(order, shuffled_order(50, seed=5))
