"""Rows held across batches and counted together: nothing lost, reordered or counted twice."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.monitoring.pending import PendingRows


class Counted:
    """What ``PendingRows`` handed to its ``count``, call by call (copies: the views are
    reused)."""

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray | None, ...]] = []

    def __call__(self, *parts: np.ndarray | None) -> None:
        self.calls.append(tuple(None if p is None else p.copy() for p in parts))

    def rows(self, part: int) -> list:
        return [row for call in self.calls for row in call[part].tolist()]


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), max_size=30), capacity=st.integers(1, 32))
def test_every_row_is_counted_once_in_order_and_at_most_capacity_at_a_time_unless_whole(
    sizes: list[int], capacity: int
) -> None:
    counted = Counted()
    pending = PendingRows(counted, capacity=capacity)
    matrix = np.arange(2 * sum(sizes), dtype=np.float32).reshape(-1, 2)
    start = 0
    for n in sizes:
        pending.add(matrix[start : start + n], matrix[start : start + n, 0].astype(np.int64))
        start += n
    pending.flush()
    assert counted.rows(0) == matrix.tolist()
    assert counted.rows(1) == matrix[:, 0].astype(np.int64).tolist()
    assert pending.size == 0
    # A call holds at most ``capacity`` rows, or exactly one batch that was as large.
    assert all(len(call[0]) <= capacity or len(call[0]) in sizes for call in counted.calls)


def test_rows_are_held_until_full_or_flushed() -> None:
    counted = Counted()
    pending = PendingRows(counted, capacity=10)
    pending.add(np.ones((4, 3)), None)
    pending.add(np.ones((5, 3)), None)
    assert counted.calls == [] and pending.size == 9
    pending.add(np.ones((2, 3)), None)  # no room: the nine are counted first
    assert [len(call[0]) for call in counted.calls] == [9] and counted.calls[0][1] is None
    pending.flush()
    pending.flush()  # nothing held: no call
    assert [len(call[0]) for call in counted.calls] == [9, 2]


def test_a_batch_with_other_parts_has_the_held_rows_counted_first() -> None:
    counted = Counted()
    pending = PendingRows(counted, capacity=100)
    pending.add(np.zeros((3, 2)), None)
    pending.add(np.ones((2, 2)), np.arange(2))  # now with codes
    pending.add(np.ones((2, 5)), np.arange(2))  # a wider matrix
    pending.flush()
    assert [(len(c[0]), c[0].shape[1], c[1] is None) for c in counted.calls] == [
        (3, 2, True),
        (2, 2, False),
        (2, 5, False),
    ]


def test_clear_drops_the_held_rows() -> None:
    counted = Counted()
    pending = PendingRows(counted, capacity=10)
    pending.add(np.zeros((3, 2)))
    pending.clear()
    pending.flush()
    assert counted.calls == []
