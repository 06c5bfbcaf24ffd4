"""The GPU order benchmark's accounting: idle GPU seconds are charged to the order state the
order was in, so a whole-order run says where the GPU waited (bench/gpu/order.py)."""

from __future__ import annotations

import pytest

from bench.gpu.order import idle_by_state


def test_idle_seconds_are_charged_to_the_state_the_order_was_in() -> None:
    transitions = [(0.0, "QUEUED"), (2.0, "TRAINING"), (10.0, "GENERATING"), (16.0, "FILTERING")]
    # idle while queued (model load), busy while training except 1 s, busy generating except
    # 0.5 s (adapter swap), idle while filtering (scoring on the CPU)
    samples = [(t / 2, 0.0) for t in range(0, 4)]  # 0.0 .. 1.5
    samples += [(2.0 + t / 2, 0.0 if t < 2 else 90.0) for t in range(16)]  # 2.0 .. 9.5
    samples += [(10.0 + t / 2, 0.0 if t == 0 else 95.0) for t in range(12)]  # 10.0 .. 15.5
    samples += [(16.0 + t / 2, 1.0) for t in range(8)]  # 16.0 .. 19.5
    by_state = idle_by_state(samples, transitions, end=20.0)
    assert by_state["QUEUED"] == {"seconds": 2.0, "idle_s": 2.0, "sampled_s": 2.0}
    assert by_state["TRAINING"]["idle_s"] == pytest.approx(1.0)
    assert by_state["GENERATING"]["idle_s"] == pytest.approx(0.5)
    assert by_state["FILTERING"] == {"seconds": 4.0, "idle_s": 4.0, "sampled_s": 4.0}
    total = sum(row["seconds"] for row in by_state.values())
    assert total == pytest.approx(20.0)


def test_a_state_entered_twice_adds_up_and_no_samples_means_no_idle() -> None:
    transitions = [(0.0, "GENERATING"), (3.0, "FILTERING"), (4.0, "GENERATING")]
    by_state = idle_by_state([], transitions, end=6.0)
    assert by_state["GENERATING"]["seconds"] == pytest.approx(5.0)
    assert by_state["GENERATING"]["idle_s"] == 0.0 and by_state["GENERATING"]["sampled_s"] == 0.0
