"""The peers benchmark as a Markdown table, the targets' ratios and a PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(value: float | None, pattern: str) -> str:
    return "—" if value is None else format(value, pattern)


def _way(report: dict[str, Any], prefix: str, variant: str | None = None) -> dict | None:
    for way in report["ways"]:
        if way["name"].startswith(prefix) and (variant is None or way["variant"] == variant):
            return way
    return None


def ratios(report: dict[str, Any]) -> list[tuple[str, float | None, float]]:
    """(what, measured ratio, target) for each target the issue sets, per bertserve variant."""
    rows = []
    torch_sorted = _way(report, "PyTorch, batches of 32 sorted")
    st = _way(report, "sentence-transformers")
    variants = sorted({w["variant"] for w in report["ways"] if w["name"].startswith("bertserve")})
    for variant in variants:
        one = _way(report, "bertserve, one call", variant)
        callers = _way(report, "bertserve, 8 callers", variant)
        bulk = _way(report, "bertserve embed --input", variant)
        onnx = _way(report, "onnxruntime session", variant)
        candidates = [w for w in (one, bulk) if w]
        best = max(candidates, key=lambda w: w["sentences_per_s"]) if candidates else None

        def ratio(a: dict | None, b: dict | None) -> float | None:
            if not a or not b or not b["sentences_per_s"]:
                return None
            return a["sentences_per_s"] / b["sentences_per_s"]

        rows += [
            (f"[{variant}] best bulk way / raw onnxruntime (sorted 32s)", ratio(best, onnx), 1.0),
            (f"[{variant}] best bulk way / sentence-transformers", ratio(best, st), 1.4),
            (f"[{variant}] best bulk way / PyTorch sorted", ratio(best, torch_sorted), 1.15),
            (f"[{variant}] 8 unsorted callers / one call", ratio(callers, one), 0.9),
            (f"[{variant}] bulk CLI / one call", ratio(bulk, one), 0.95),
        ]
        for way in (one, bulk):
            if way and way["padding"] is not None:
                rows.append(
                    (f"[{variant}] padding of {way['name']} (at most)", way["padding"], 1.08)
                )
        raw = _latency(report, "onnxruntime session", variant)
        served = _latency(report, "bertserve", variant)
        if raw and served:
            rows.append(
                (
                    f"[{variant}] single request p50 over the raw session, ms (at most)",
                    served["p50_ms"] - raw["p50_ms"],
                    1.0,
                )
            )
            rows.append(
                (
                    f"[{variant}] single request p99 / p50 (at most)",
                    served["p99_ms"] / served["p50_ms"],
                    2.0,
                )
            )
        sweep = {s["callers"]: s for s in report["sweep"] if s["variant"] == variant}
        if 1 in sweep and 64 in sweep and sweep[1]["requests_per_s"]:
            rows.append(
                (
                    f"[{variant}] 64 callers / 1 caller, requests/s",
                    sweep[64]["requests_per_s"] / sweep[1]["requests_per_s"],
                    3.0,
                )
            )
    return rows


def _latency(report: dict[str, Any], name: str, variant: str) -> dict | None:
    return next(
        (x for x in report["latency"] if x["name"] == name and x["variant"] == variant), None
    )


def markdown(report: dict[str, Any]) -> str:
    """The tables a README shows: ways, targets, single requests, the concurrency sweep."""
    corpus = report["corpus"]
    lines = [
        f"{report['cpu']}; {report['threads']} threads for every way; model {report['model']}; "
        f"corpus: {corpus['texts']:,} texts, {corpus['real_tokens']:,} real tokens "
        f"({corpus['source']}); medians of {report['repeats']} rounds.",
        "",
        "| way | variant | sentences/s | tokens/s | computed ÷ real tokens "
        "| worst cosine to PyTorch |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for way in report["ways"]:
        lines.append(
            f"| {way['name']} | {way['variant']} | {way['sentences_per_s']:,.1f} | "
            f"{way['tokens_per_s']:,.0f} | {_fmt(way['padding'], '.3f')} | "
            f"{_fmt(way['cosine'], '.5f')} |"
        )
    lines += ["", "| target | measured | goal |", "| --- | ---: | ---: |"]
    for what, measured, goal in ratios(report):
        lines.append(f"| {what} | {_fmt(measured, '.2f')} | {goal:g} |")
    lines += [
        "",
        "| single short requests, one after another | variant | p50 ms | p99 ms |",
        "| --- | --- | ---: | ---: |",
    ]
    for x in report["latency"]:
        lines.append(f"| {x['name']} | {x['variant']} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} |")
    lines += [
        "",
        "| concurrent callers (one short text each) | variant | requests/s | p50 ms | p99 ms |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for x in report["sweep"]:
        lines.append(
            f"| {x['callers']} | {x['variant']} | {x['requests_per_s']:,.0f} | "
            f"{x['p50_ms']:.1f} | {x['p99_ms']:.1f} |"
        )
    for note in report["notes"]:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Sentences/s of every way, and requests/s by concurrent callers, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ways = report["ways"]
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(14, 0.45 * len(ways) + 2.5), gridspec_kw={"width_ratios": [3, 2]}
    )
    labels = [f"{w['name']} [{w['variant']}]" for w in ways]
    colors = ["#d9822b" if w["name"].startswith("bertserve") else "#8a9ba8" for w in ways]
    left.barh(labels, [w["sentences_per_s"] for w in ways], color=colors)
    left.invert_yaxis()
    left.set_xlabel("sentences/s (higher is better)")
    left.set_title(f"{report['corpus']['texts']:,} real texts, mean-pooled {report['model']}")
    for variant in sorted({s["variant"] for s in report["sweep"]}):
        points = [s for s in report["sweep"] if s["variant"] == variant]
        right.plot(
            [p["callers"] for p in points],
            [p["requests_per_s"] for p in points],
            marker="o",
            label=f"bertserve [{variant}]",
        )
    right.set_xscale("log", base=2)
    right.set_xlabel("concurrent callers, one short text each")
    right.set_ylabel("requests/s")
    right.set_title("dynamic batching")
    right.legend()
    figure.suptitle(report["cpu"], fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
