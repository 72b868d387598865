"""The loop's tickers: on a phase of the wall clock's grid, every tick once."""

from __future__ import annotations

import threading
import time

from sci.reactor import Reactor

INTERVAL = 0.2
PHASE = 0.05
#: how late a tick may come on a busy machine and still count as on its grid point
LATE = 0.08


def _ticks(phase: float | None, count: int) -> list[float]:
    reactor = Reactor()
    seen: list[float] = []
    stops = []

    def tick() -> None:
        seen.append(time.time())
        if len(seen) == count:
            stops[0]()
            reactor.stop()

    stops.append(reactor.add_ticker(INTERVAL, tick, phase))
    thread = threading.Thread(target=reactor.run)
    thread.start()
    thread.join(timeout=count * INTERVAL * 10)
    reactor.stop()
    thread.join()
    reactor.close()
    return seen


def test_phased_ticks_fall_on_the_wall_clock_grid_once_each() -> None:
    seen = _ticks(PHASE, 8)
    assert len(seen) == 8
    points = [round((t - PHASE) / INTERVAL) for t in seen]
    offsets = [t - PHASE - point * INTERVAL for t, point in zip(seen, points)]
    assert all(-0.01 < offset < LATE for offset in offsets), offsets
    # one tick per grid point: none doubled, none skipped while the loop keeps up
    assert points == list(range(points[0], points[0] + 8))


def test_tickers_of_one_phase_share_a_pass() -> None:
    reactor = Reactor()
    calls: list[str] = []
    stops = [reactor.add_ticker(INTERVAL, lambda n=n: calls.append(n), PHASE) for n in "abc"]
    stops.append(reactor.add_ticker(INTERVAL, lambda: calls.append("other"), PHASE + INTERVAL / 2))
    assert len(reactor._timers) == 2  # one timer per phase, whatever the number of tickers on it
    for stop in stops:
        stop()
    reactor.close()
