"""The memory meters against running sums of known allocations (the obvious oracle)."""

from __future__ import annotations

import random

import torch

from kdmem.measure.memory import AllocatorMeter, TensorMeter, peak_of


def _script(seed: int, n: int) -> list[tuple[str, int]]:
    """A random sequence of ("alloc", bytes) and ("free", index of a live block) steps."""
    rng = random.Random(seed)
    steps: list[tuple[str, int]] = []
    live = 0
    for _ in range(n):
        if live and rng.random() < 0.4:
            steps.append(("free", rng.randrange(live)))
            live -= 1
        else:
            steps.append(("alloc", rng.randrange(1, 300_000)))
            live += 1
    return steps


def _play(steps: list[tuple[str, int]], live: list[torch.Tensor]) -> None:
    for kind, arg in steps:
        if kind == "alloc":
            live.append(torch.empty(arg, dtype=torch.uint8))  # one block of exactly arg bytes
        else:
            del live[arg]  # the last reference: the block is freed here


def _oracle(steps: list[tuple[str, int]], start: int = 0, end: int | None = None) -> tuple:
    """(peak over steps[start:end] counted from the bytes live before it, live at the end)."""
    sizes: list[int] = []
    peak = at_start = 0
    for i, (kind, arg) in enumerate(steps):
        if i == start:
            peak = at_start = sum(sizes)
        if kind == "alloc":
            sizes.append(arg)
        else:
            del sizes[arg]
        if start <= i < (len(steps) if end is None else end):
            peak = max(peak, sum(sizes))
    return peak, at_start, sum(sizes)


def test_allocator_meter_peak_is_the_running_sum_of_the_blocks() -> None:
    steps = _script(0, 300) + [("free", 0)] * 5  # ends freeing: the peak is not the end
    live: list[torch.Tensor] = []
    with AllocatorMeter() as m:
        _play(steps, live)
    peak, _, current = _oracle(steps)
    assert (m.peak_bytes, m.current_bytes) == (peak, current)
    assert m.events == len(steps)
    allocated = sum(arg for kind, arg in steps if kind == "alloc")
    assert allocated > peak > current > 0


def test_allocator_meter_window_starts_at_reset_and_ends_at_stop() -> None:
    steps = _script(1, 300)
    live: list[torch.Tensor] = []
    with AllocatorMeter() as m:
        _play(steps[:100], live)
        m.reset_peak()
        _play(steps[100:200], live)
        m.stop_peak()
        _play(steps[200:], live)
    assert (m.peak_bytes, m.bytes_at_reset, m.current_bytes) == _oracle(steps, 100, 200)
    whole = _oracle(steps)[0]
    assert whole != m.peak_bytes  # this script's window peak differs from the whole run's


def test_blocks_from_before_the_meter_are_not_counted() -> None:
    before = torch.empty(1_000_000, dtype=torch.uint8)
    with AllocatorMeter():  # an earlier meter: PyTorch still knows this block's size later
        earlier = torch.empty(300_000, dtype=torch.uint8)
    with AllocatorMeter() as m:
        del before, earlier  # their frees are ignored, not subtracted
        kept = torch.empty(1000, dtype=torch.uint8)
    assert (m.peak_bytes, m.current_bytes, m.events) == (1000, 1000, 1) and kept.numel() == 1000


def test_allocator_meter_sees_what_an_op_allocates_and_frees_inside() -> None:
    # CPU attention (the flash kernel) allocates its per-thread score buffers with PyTorch's
    # allocator and frees them before it returns: in the allocator's peak, never in the live
    # tensor bytes, which see only what ops return.
    g = torch.Generator().manual_seed(0)
    with AllocatorMeter() as a, TensorMeter() as t:
        q = torch.randn(1, 1, 256, 512, generator=g)
        k = torch.randn(1, 1, 384, 512, generator=g)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, k)
    assert a.current_bytes == t.current_bytes == q.nbytes + k.nbytes + y.nbytes
    assert a.peak_bytes > t.peak_bytes >= a.current_bytes


def test_peak_of_counts_the_window_from_the_bytes_live_at_its_start() -> None:
    events = [(0, 10), (1, 5), (2, -10), (3, 20), (4, -20), (5, 7)]  # live: 10 15 5 25 5 12
    assert peak_of(events) == (25, 0, 12)
    assert peak_of(events, end=3) == (15, 0, 12)
    assert peak_of(events, start=4) == (25, 25, 12)  # live at the start counts
    assert peak_of(events, start=5) == (12, 5, 12)
    assert peak_of(events, start=9) == (12, 12, 12)  # no event in the window
