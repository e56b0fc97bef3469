"""``bertserve bench``: the load generator, or with ``--peers`` every way to get the same
vectors side by side. Arguments only here; the work is imported when the command runs."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from bertserve.client.cli import HelpFormatter
from bertserve.variants import DEFAULT_VARIANTS

DESCRIPTION = """\
Without --peers: a load generator. For each setting (variant x tokens per text x texts per \
request x concurrency) closed-loop callers send real texts, cut to exactly the asked number of \
tokens, for --duration seconds or --requests requests; it reports requests/s, sequences/s, \
tokens/s and the median, p90 and p99 latency, with the CPU and its vector flags. Compare \
figures within one run only.
With --peers: every way to the same sentence vectors side by side on one corpus and the same \
threads (PyTorch, sentence-transformers, a raw onnxruntime session per variant, bertserve over \
gRPC and the bulk CLI), then single short requests and a sweep of concurrent callers; \
missing peers are skipped with a note. --latency runs only that last part.
Every mode says how long it will take, from a measured first step, before the bulk of the \
work; --quick runs a short version (seconds, not minutes) on the same real texts.
"""

EXAMPLES = """\
examples:
  bertserve bench --quick --repo models
  bertserve bench --peers --quick --repo models --out bench-results
  bertserve bench --repo models --variants fp32-opt,int8 --lengths 16,128 --concurrency 1,8 \
--duration 5
  bertserve bench --target 127.0.0.1:50051 --model minilm --lengths 16 --concurrency 1,4,16 \
--requests 480
  bertserve bench --latency --repo models --variants fp32-opt --concurrency 1,64
"""


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command."""
    bench = subparsers.add_parser(
        "bench",
        help="load-test a server, or (--peers) compare it with every other way to get vectors",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    where = bench.add_mutually_exclusive_group()
    where.add_argument(
        "--target",
        default=None,
        help="a running server (default: $BERTSERVE_TARGET or 127.0.0.1:50051)",
    )
    where.add_argument("--repo", type=Path, help="start a server on this model repository")
    bench.add_argument(
        "--server-arg", action="append", default=[], help="extra `serve` argument (repeatable)"
    )
    bench.add_argument("--model", default=None, help="model name (default: the server's)")
    bench.add_argument("--variants", default="", help="e.g. fp32-opt,int8 (default: server's)")
    bench.add_argument(
        "--concurrency",
        type=_ints,
        default=None,
        help="callers at once, e.g. 1,8,32 (default: 1,8; --peers 1,4,16,64; --latency 1,64)",
    )
    bench.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    bench.add_argument(
        "--quick",
        action="store_true",
        help="a short run (seconds, not minutes) on the same real texts: 1 s per setting; "
        f"--peers: {QUICK['texts']} texts, 1 round, {QUICK['latency_requests']} single "
        "requests, 1 s per concurrency level of 1,8 (options given explicitly still win)",
    )
    loadgen = bench.add_argument_group("load generator (without --peers)")
    loadgen.add_argument(
        "--batch-sizes",
        type=_ints,
        default=[1],
        help="texts per request, comma-separated (default: 1)",
    )
    loadgen.add_argument(
        "--lengths",
        type=_ints,
        default=[16, 128],
        help="tokens per text, comma-separated (default: 16,128)",
    )
    stop = loadgen.add_mutually_exclusive_group()
    stop.add_argument(
        "--duration", type=float, default=None, help="seconds per setting (default: 10; --quick 1)"
    )
    stop.add_argument(
        "--requests", type=int, default=None, help="requests per setting (default: --duration)"
    )
    loadgen.add_argument("--warmup", type=int, default=3, help="requests before measuring")
    loadgen.add_argument(
        "--output", choices=("sentence", "tokens"), default="sentence", help="what is asked for"
    )
    side = bench.add_argument_group("peers (--peers; needs --repo for the raw sessions)")
    side.add_argument("--peers", action="store_true", help="compare every way, side by side")
    side.add_argument(
        "--latency",
        action="store_true",
        help="only single short requests (raw session, bertserve, a gRPC echo floor) and the "
        "callers sweep (default --concurrency 1,64)",
    )
    side.add_argument("--texts", type=int, help="corpus size (default: 1024; --quick 128)")
    side.add_argument("--repeats", type=int, help="rounds; medians are quoted (default: 3)")
    side.add_argument("--checkpoint", type=Path, help="PyTorch checkpoint (default: the source)")
    side.add_argument(
        "--latency-requests", type=int, help="single requests (default: 300, --latency 600)"
    )
    side.add_argument("--sweep-seconds", type=float, help="per concurrency level (default: 5)")
    side.add_argument("--threads", type=int, default=0, help="threads of every way (0: CPUs)")
    side.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="folder for JSON, .md and .png"
    )
    bench.set_defaults(run=run_bench, extra="bench")


# what --quick changes (the rest is as without it); options given explicitly always win
QUICK = {"duration": 1.0, "texts": 64, "repeats": 1, "latency_requests": 50, "sweep_seconds": 1.0}
FULL = {"texts": 1024, "repeats": 3, "latency_requests": 300, "sweep_seconds": 5.0}
FULL_LATENCY_REQUESTS = 600
# modules every mode needs from the [bench] extra (the PyTorch peers are optional: [export])
NEEDED = ("onnxruntime", "tokenizers")
BENCH_HINT = "pip install -e '.[bench]' (in this repository)"


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options left unset: --quick's short run, or the full one."""
    for name, full in FULL.items():
        if getattr(args, name) is None:
            quick = QUICK.get(name, full)
            if name == "latency_requests" and args.latency and not args.quick:
                full = FULL_LATENCY_REQUESTS
            setattr(args, name, quick if args.quick else full)
    if args.quick and args.duration is None and args.requests is None:
        args.duration = QUICK["duration"]
    if args.quick and args.concurrency is None and (args.peers or args.latency):
        args.concurrency = [1, 8]
    return args


def missing_modules(names: tuple[str, ...] = NEEDED) -> list[str]:
    """Which of ``names`` cannot be imported here."""
    import importlib.util

    return [name for name in names if importlib.util.find_spec(name) is None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_bench(args: argparse.Namespace) -> int:
    """``bertserve bench``: a missing module or a server that does not start is said in one
    line with its fix, not a traceback."""
    resolve(args)
    needed = NEEDED if (args.peers or args.latency) else ()
    missing = missing_modules(needed)
    if missing:
        print(
            f"bertserve bench: needs {', '.join(missing)}: {BENCH_HINT}",
            file=sys.stderr,
        )
        return 2
    try:
        return _run(args)
    except ModuleNotFoundError as error:
        print(f"bertserve bench: needs {error.name}: {BENCH_HINT}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # the server did not start, a peer failed: its own words
        print(f"bertserve bench: {error}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from bertserve.client.channel import default_target

    from .load import cpu_description

    cpu = cpu_description()
    print(cpu, flush=True)
    if args.peers or args.latency:
        return _run_peers(args, cpu)
    from .load import run_load

    target = None if args.repo else (args.target or default_target())
    return run_load(args, cpu, target)


def wrote(paths: list[Path], why_not: str = "") -> str:
    """The line naming the files written (each one checked), and why one was not."""
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise RuntimeError(f"these files were not written: {', '.join(absent)}")
    return f"wrote {', '.join(str(p) for p in paths)}" + (f" ({why_not})" if why_not else "")


def _run_peers(args: argparse.Namespace, cpu: str) -> int:
    from . import peers, report
    from .load import started_server

    if not args.repo:
        print(
            "bertserve bench --peers/--latency: needs --repo (the raw sessions load its files)",
            file=sys.stderr,
        )
        return 2
    if min(args.texts, args.repeats, args.latency_requests) < 1 or args.sweep_seconds <= 0:
        print(
            "bertserve bench: --texts, --repeats, --latency-requests and --sweep-seconds "
            "must be positive",
            file=sys.stderr,
        )
        return 2
    model = (
        args.model or sorted(p.parent.parent.name for p in args.repo.glob("*/*/manifest.json"))[0]
    )
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] or [
        v for v in DEFAULT_VARIANTS if (args.repo / model / v / "manifest.json").is_file()
    ]
    if not missing_modules(("matplotlib",)):  # its import takes seconds: before the estimate
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
    metrics_port = _free_port()
    extra = ["--metrics-port", str(metrics_port), *args.server_arg]
    if args.latency:
        return _run_latency(args, cpu, model, variants, extra)
    with started_server(args.repo, extra) as target:
        settings = peers.PeerSettings(
            repo=args.repo,
            target=args.target or target,
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
            model=model,
            variants=variants,
            texts=args.texts,
            repeats=args.repeats,
            threads=args.threads,
            checkpoint=args.checkpoint,
            latency_requests=args.latency_requests,
            concurrency=tuple(args.concurrency or (1, 4, 16, 64)),
            sweep_seconds=args.sweep_seconds,
        )
        result = peers.run_peers(settings, log=lambda line: print(line, flush=True))
    result["cpu"] = cpu
    args.out.mkdir(parents=True, exist_ok=True)
    table = report.markdown(result)
    files = [args.out / "peers.json", args.out / "peers.md"]
    files[0].write_text(json.dumps(result, indent=2))
    files[1].write_text(table)
    why_not = ""
    if missing_modules(("matplotlib",)):
        why_not = f"no peers.png: matplotlib is not installed; {BENCH_HINT}"
    else:
        report.plot(result, args.out / "peers.png")
        files.append(args.out / "peers.png")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        files.append(args.json)
    print(table)
    print(
        f"took {result['seconds']:.0f} s (estimated {result['estimated_seconds']:.0f} s before "
        f"the first round); client and server shared this machine's {os.cpu_count()} CPUs"
    )
    print(wrote(files, why_not))
    return 0


def _run_latency(
    args: argparse.Namespace, cpu: str, model: str, variants: list[str], extra: list[str]
) -> int:
    from . import latency
    from .load import started_server

    with started_server(args.repo, extra) as target:
        settings = latency.LatencySettings(
            repo=args.repo,
            target=args.target or target,
            model=model,
            variants=variants,
            requests=args.latency_requests,
            concurrency=tuple(args.concurrency or (1, 64)),
            sweep_seconds=args.sweep_seconds,
            threads=args.threads,
        )
        result = latency.run_latency(settings, log=lambda line: print(line, flush=True))
    result["cpu"] = cpu
    args.out.mkdir(parents=True, exist_ok=True)
    table = latency.markdown(result)
    files = [args.out / "latency.json", args.out / "latency.md"]
    files[0].write_text(json.dumps(result, indent=2))
    files[1].write_text(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        files.append(args.json)
    print(table)
    print(cpu)
    print(
        f"client and servers shared this machine's {os.cpu_count()} CPUs: compare figures "
        "within one run only"
    )
    print(wrote(files))
    return 0
