"""Wall-clock timing for the benchmark scripts."""
from __future__ import annotations

import time
from typing import Callable


def best_of(fn: Callable[[], object], repeats: int, warmup: bool = False) -> float:
    """The shortest of `repeats` timed calls of `fn` (seconds), after one untimed call if `warmup`."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
