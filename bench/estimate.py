"""How long a ``bertserve bench`` run will take: from the settings it will run and what its
first, measured step took (seconds per request of each kind, or a whole first round), never a
constant guessed in advance. Pure arithmetic, so that it can be checked without a model."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bertserve.client.progress import duration


def load_seconds(
    settings: Iterable[tuple[str, int, int, int]],
    per_request: dict[tuple[str, int, int], float],
    *,
    seconds: float | None,
    requests: int | None,
    warmup: int,
) -> tuple[float, bool]:
    """The load generator's measuring time: ``settings`` are (variant, length, batch,
    concurrency); ``per_request`` the measured seconds of one request of (variant, length,
    batch) from a single caller. With ``seconds`` per setting the figure is close (a setting
    also waits for the requests still in flight at its end: at most one per caller, answered
    one after another by a busy server); with ``requests`` per setting it is an upper bound
    (callers at once finish sooner unless the server is saturated), flagged by the second
    value."""
    total = 0.0
    for variant, length, batch, callers in settings:
        one = per_request[(variant, length, batch)]
        measuring = seconds + callers * one if seconds is not None else (requests or 0) * one
        total += warmup * one + measuring
    return total, seconds is None


def peers_seconds(
    *,
    round_seconds: float,
    repeats: int,
    single_seconds: Sequence[float],
    latency_requests: int,
    sweep_levels: int,
    variants: int,
    sweep_seconds: float,
    single_warmup: int = 20,
) -> float:
    """What is left of ``bench --peers`` after its first round: the other rounds (each like
    the first), ``single_warmup`` + ``latency_requests`` single requests of each way whose
    measured seconds per request are ``single_seconds``, and a sweep of ``sweep_levels``
    levels per variant."""
    rounds = (repeats - 1) * round_seconds
    singles = (single_warmup + latency_requests) * sum(single_seconds)
    return rounds + singles + variants * sweep_levels * sweep_seconds


def latency_seconds(
    *,
    round_seconds: float,
    requests: int,
    variants: int,
    sweep_levels: int,
    sweep_seconds: float,
) -> float:
    """``bench --latency``: ``requests`` turns of one request per way (one turn measured at
    ``round_seconds``) and a sweep of ``sweep_levels`` levels, for each variant."""
    return variants * (requests * round_seconds + sweep_levels * sweep_seconds)


def rescaled(left: float, actual: float, estimated: float) -> float:
    """The estimate of what is left, corrected by how the done part compared with its own."""
    return left * actual / estimated if estimated > 0 and actual > 0 else left


def say(seconds: float, *, upper: bool = False, already: float = 0.0) -> str:
    """``about 1m20s`` (``at most`` for an upper bound), with what already went when given."""
    text = f"{'at most' if upper else 'about'} {duration(seconds)}"
    if already > 0:
        text += f" more ({duration(already)} so far)"
    return text
