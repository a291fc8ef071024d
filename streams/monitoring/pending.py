"""Rows a monitor has yet to count, held so that they are counted many batches at a time.

Counting a batch is a handful of numpy calls whatever its size, and at a few dozen rows per
batch numpy's per-call cost (microseconds) outweighs the arithmetic. So a monitor copies
each batch's arrays into preallocated ones (one slice assignment per array) and counts the
rows together when ``capacity`` are held, or sooner when its window closes (``flush``). The
counts come out the same: they are sums. A batch of ``capacity`` rows or more is counted at
once, without the copy.

>>> import numpy as np
>>> seen = []
>>> pending = PendingRows(lambda values, extra: seen.append(values.sum()), capacity=4)
>>> pending.add(np.array([1, 2]), None)
>>> pending.add(np.array([3]), None)
>>> seen, pending.size
([], 3)
>>> pending.add(np.array([4, 5]), None)  # no room for two more: the three held are counted
>>> pending.flush()
>>> [int(total) for total in seen]
[6, 9]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

#: Rows held before they are counted: a few hundred µs of counting per flush at most.
CAPACITY = 1024

Part = npt.NDArray[np.generic] | None


class PendingRows:
    """Arrays of the same rows (a matrix, its scores, ...) held until ``count`` takes them.

    ``count`` is called with one array per part, each the held rows (views into the buffers,
    valid until the next ``add``), or None where the batches gave None for that part. Batches
    must agree on which parts are None and on each part's trailing shape; a batch that does
    not has the held rows counted first.
    """

    def __init__(self, count: Callable[..., None], capacity: int = CAPACITY) -> None:
        self.count = count
        self.capacity = capacity
        self.size = 0
        self._buffers: list[npt.NDArray[np.generic] | None] = []
        self._layout: tuple[tuple[int, ...] | None, ...] = ()

    def add(self, *parts: Part) -> None:
        """Hold one batch's rows (every part has the same number of rows)."""
        n = next(len(part) for part in parts if part is not None)
        layout = tuple(None if part is None else part.shape[1:] for part in parts)
        if layout != self._layout or n > self.capacity - self.size:
            self.flush()
        if n >= self.capacity:
            self.count(*parts)
            return
        if layout != self._layout:
            self._layout = layout
            self._buffers = [
                None if part is None else np.empty((self.capacity, *part.shape[1:]), part.dtype)
                for part in parts
            ]
        held = slice(self.size, self.size + n)
        for buffer, part in zip(self._buffers, parts, strict=True):
            if buffer is not None and part is not None:  # None alike, by the layout check
                buffer[held] = part
        self.size += n

    def flush(self) -> None:
        """Count the rows held, if any."""
        if self.size:
            size, self.size = self.size, 0
            self.count(*(None if b is None else b[:size] for b in self._buffers))

    def clear(self) -> None:
        """Drop the rows held without counting them."""
        self.size = 0
