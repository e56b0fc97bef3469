"""What the reliability scenarios share: texts whose token count tells them apart, and the
server's gauges back at their baseline after each scenario."""

from __future__ import annotations

import time

from servers import ServerProcess, scrape, total

WORDS = ("red", "green", "blue", "black", "white", "paris", "london", "rome")


def text(i: int, words: int = 5) -> str:
    """A real sentence whose token count is ``i % words + 4`` ([CLS], n words, two for the
    number, [SEP]) and whose meaning differs with ``i``."""
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(i % words + 1)) + f" no. {i % 10}"


def gauges(server: ServerProcess) -> dict[str, float]:
    samples = scrape(server.metrics_url)
    return {
        "in_flight": total(samples, "bertserve_in_flight_requests"),
        "queued": total(samples, "bertserve_queue_requests"),
        "stream_buffered": total(samples, "bertserve_stream_buffered_bytes"),
        "loop_tasks": total(samples, "bertserve_event_loop_tasks"),
    }


def baseline(server: ServerProcess) -> dict[str, float]:
    """The gauges at rest, after one call has started the batcher's loop."""
    from bertserve.client import Client

    with Client(server.target) as client:
        client.embed(["warm up"])
    return gauges(server)


def settled(server: ServerProcess, baseline: dict[str, float], timeout: float = 30) -> dict:
    """Wait until in-flight calls, queued requests and buffered stream bytes are 0 and the event
    loop holds no more tasks than at ``baseline``; the gauges (assert fails after timeout)."""
    end = time.monotonic() + timeout
    while True:
        now = gauges(server)
        if (
            now["in_flight"] == 0
            and now["queued"] == 0
            and now["stream_buffered"] == 0
            and now["loop_tasks"] <= baseline["loop_tasks"]
        ):
            return now
        assert time.monotonic() < end, f"not back to baseline {baseline}: {now}"
        time.sleep(0.1)
