"""Long-document retrieval over a live server: truncation, CHUNK (mean, max) and late chunking.

    python scripts/long_text_retrieval.py --repo REPO [--out docs/long-documents.md]
    python scripts/long_text_retrieval.py --target HOST:PORT

Queries are sentences removed from the sections of CPython's documentation topics
(``pydoc_data.topics``); docs/long-documents.md says what is measured and how, and the
table goes into it (``--out``). Needs [server] for ``--repo``, else a running server.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A heading: a line of text underlined by one repeated punctuation character.
HEADING = re.compile(r"^(\S[^\n]*)\n([=\-*~^\"+#])\2+[ \t]*$", re.M)
# A paragraph: a run of lines without a blank line between them.
PARAGRAPH = re.compile(r"\S(?:[^\n]|\n(?![ \t]*(?:\n|$)))*")
# A sentence ends after . ! or ? (and a closing quote or bracket) before whitespace and a capital.
SENTENCE_END = re.compile(r"[.!?][\"'”’)]?(?=\s+[A-Z\"“(])")
QUERY_WORDS = (8, 60)


@dataclass(frozen=True)
class Section:
    """One unit to retrieve: ``text`` (heading first) lacks ``query``, which was at ``query_at``."""

    topic: str
    title: str
    text: str
    query: str
    query_at: int


def split_sections(text: str) -> list[tuple[str, str]]:
    """(title, text) of each section of a topic, cut at its headings; the text starts with the
    title (underline dropped). Text before the first heading is a section titled ''."""
    sections = []
    heads = list(HEADING.finditer(text))
    if not heads or text[: heads[0].start()].strip():
        sections.append(("", text[: heads[0].start() if heads else len(text)].strip()))
    for head, after in zip(heads, [*heads[1:], None], strict=True):
        body = text[head.end() : after.start() if after else len(text)].strip()
        sections.append((head.group(1).strip(), f"{head.group(1).strip()}\n\n{body}".strip()))
    return [(title, body) for title, body in sections if body]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of every sentence of every paragraph of ``text``, in order."""
    spans = []
    for paragraph in PARAGRAPH.finditer(text):
        start = paragraph.start()
        for end in SENTENCE_END.finditer(paragraph.group()):
            spans.append((start, paragraph.start() + end.end()))
            start = paragraph.start() + end.end()
            start += len(text[start:]) - len(text[start:].lstrip())
        spans.append((start, paragraph.end()))
    return spans


def is_prose(sentence: str) -> bool:
    """A sentence of running text worth querying with: a capital first, a full stop last,
    QUERY_WORDS words, mostly letters, no interpreter prompt or table rule (not code)."""
    words = sentence.split()
    if not QUERY_WORDS[0] <= len(words) <= QUERY_WORDS[1] or any(
        mark in sentence for mark in (">>>", "|", "+--")
    ):
        return False
    if not sentence[0].isupper() or not sentence.rstrip("\"'”’)").endswith("."):
        return False
    visible = [c for c in sentence if not c.isspace()]
    return sum(c.isalpha() for c in visible) >= 0.75 * len(visible)


def take_query(
    text: str,
    rng: random.Random,
    skip: int = 1,
    allowed: Callable[[str], bool] = lambda sentence: True,
) -> tuple[str, str, int] | None:
    """(text without the sentence, the sentence on one line, where it was) for one sentence
    drawn from the ``allowed`` prose sentences after the first ``skip`` (a titled section:
    its title and its first sentence); None if there is none."""
    lines = [(a, b, " ".join(text[a:b].split())) for a, b in sentence_spans(text)[skip:]]
    candidates = [(a, b) for a, b, line in lines if is_prose(line) and allowed(line)]
    if not candidates:
        return None
    start, end = rng.choice(candidates)
    return text[:start] + text[end:].lstrip(" "), " ".join(text[start:end].split()), start


def build_corpus(
    topics: Mapping[str, str],
    lengths: Callable[[list[str]], list[int]],
    *,
    min_tokens: int = 128,
    max_sections: int = 0,
    seed: int = 0,
) -> list[Section]:
    """The sections (in topic-name, then document order) that have a query and at least
    ``min_tokens`` tokens by ``lengths`` (counted without the query); with ``max_sections``,
    a seeded sample of that many. A section repeated in several topics counts once; a query
    that occurs in another section is not drawn."""
    drawn: list[Section] = []
    everything = [
        (topic, title, text)
        for topic in sorted(topics)
        for title, text in split_sections(topics[topic])
    ]
    flat = [" ".join(text.split()) for _, _, text in everything]
    # Topics repeat each other's sections (the "try" topic is a section of "compound"):
    # each text is kept once, in the longest topic that has it.
    owner: dict[str, int] = {}
    for index in sorted(
        range(len(everything)),
        key=lambda i: (-len(topics[everything[i][0]]), everything[i][0]),
    ):
        owner.setdefault(flat[index], index)
    for index, (topic, title, text) in enumerate(everything):
        if owner[flat[index]] != index:
            continue
        rng = random.Random(f"{seed}:{topic}:{index}")
        others = [other for other in owner if other != flat[index]]

        def unquoted(line: str, others: list[str] = others) -> bool:
            return not any(line in other for other in others)

        taken = take_query(text, rng, 2 if title else 1, unquoted)
        if taken is not None:
            drawn.append(Section(topic, title, *taken))
    counts = lengths([section.text for section in drawn]) if drawn else []
    kept = [s for s, n in zip(drawn, counts, strict=True) if n >= min_tokens]
    if max_sections and len(kept) > max_sections:
        chosen = set(random.Random(seed).sample(range(len(kept)), max_sections))
        kept = [s for i, s in enumerate(kept) if i in chosen]
    return kept


def documents(sections: Sequence[Section]) -> list[tuple[str, list[tuple[int, int]]]]:
    """Late chunking's documents: the sections of each topic joined by a blank line, with the
    [start, end) character span (code points) of each section, in ``sections`` order."""
    grouped: dict[str, list[Section]] = {}
    for section in sections:
        grouped.setdefault(section.topic, []).append(section)
    if [s for group in grouped.values() for s in group] != list(sections):
        raise ValueError("the sections of a topic must be consecutive")
    out = []
    for group in grouped.values():
        text, spans = "", []
        for section in group:
            text += "\n\n" if text else ""
            spans.append((len(text), len(text) + len(section.text)))
            text += section.text
        out.append((text, spans))
    return out


def ranks(similarity: np.ndarray, answers: Sequence[int]) -> np.ndarray:
    """1-based rank of each query's answer among all items (a tie counts against it)."""
    correct = similarity[np.arange(len(answers)), answers]
    ahead = (similarity >= correct[:, None]).sum(axis=1) - 1
    return ahead + 1


def recall_at_1(rank: np.ndarray) -> float:
    return float(np.mean(rank == 1))


def mean_reciprocal_rank(rank: np.ndarray) -> float:
    return float(np.mean(1.0 / rank))


def unit(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (cosine similarity is then a dot product)."""
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@contextmanager
def started_server(repo: str) -> Iterator[str]:
    """``bertserve serve --repo REPO`` on a free port until the block ends; yields its target
    once it is serving (it writes its port file then)."""
    port_file = Path(tempfile.mkdtemp(prefix="long-text-retrieval-")) / "port"
    command = [sys.executable, "-m", "bertserve.client.cli", "serve", "--repo", repo]
    command += [
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--no-spin-wait",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command)
    try:
        while not (port_file.is_file() and port_file.read_text().strip()):
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port_file.read_text().strip()}"
    finally:
        process.terminate()
        process.wait(60)


class Embedder:
    """Embed calls to one model of a server, built from the protobuf directly."""

    def __init__(self, target: str, model: str = "", variant: str = "", timeout: float = 900):
        import grpc
        from bertserve.v1 import bertserve_pb2, bertserve_pb2_grpc

        self.pb, self.model, self.variant, self.timeout = bertserve_pb2, model, variant, timeout
        self.channel = grpc.insecure_channel(target)
        self.stub = bertserve_pb2_grpc.BertServiceStub(self.channel)
        self.info = self.stub.ModelInfo(self.pb.ModelInfoRequest(model=model), timeout=60).model
        self.answered_by = ""

    def _embed(self, output: str, **fields: object) -> np.ndarray:
        from bertserve.client.tensors import tensor_to_numpy

        request = self.pb.EmbedRequest(
            model=self.model, variant=self.variant, pooling=self.pb.POOLING_MEAN, **fields
        )
        answer = self.stub.Embed(request, timeout=self.timeout)
        self.answered_by = f"{answer.model}/{answer.variant}"
        pieces = {piece.name: piece.tensor for piece in answer.outputs}
        return np.array(tensor_to_numpy(pieces[output]), dtype=np.float32)

    def sentences(self, texts: Sequence[str], batch: int = 8, **fields: object) -> np.ndarray:
        """The sentence vector of each text, ``batch`` texts a call."""
        rows = [
            self._embed("sentence_embedding", texts=texts[start : start + batch], **fields)
            for start in range(0, len(texts), batch)
        ]
        return np.concatenate(rows)

    def spans(self, text: str, spans: Sequence[tuple[int, int]], **fields: object) -> np.ndarray:
        """Late chunking: one vector per span of ``text``, from the whole text's tokens."""
        wire = [self.pb.Span(text=0, start=a, end=b) for a, b in spans]
        return self._embed("span_embeddings", texts=[text], spans=wire, **fields)


def run_systems(
    embedder: Embedder, sections: Sequence[Section], chunk: Mapping[str, int]
) -> dict[str, tuple[np.ndarray, float]]:
    """Each system's section vectors and the seconds it took; ``chunk`` are the window fields."""
    pb, texts = embedder.pb, [section.text for section in sections]
    calls: dict[str, Callable[[], np.ndarray]] = {
        "truncation": lambda: embedder.sentences(
            texts, long_text=pb.LONG_TEXT_TRUNCATE, truncate=True
        ),
        "CHUNK, mean": lambda: embedder.sentences(
            texts, long_text=pb.LONG_TEXT_CHUNK, chunk_pooling=pb.CHUNK_POOLING_MEAN, **chunk
        ),
        "CHUNK, max": lambda: embedder.sentences(
            texts, long_text=pb.LONG_TEXT_CHUNK, chunk_pooling=pb.CHUNK_POOLING_MAX, **chunk
        ),
        "late chunking": lambda: np.concatenate(
            [
                embedder.spans(text, spans, long_text=pb.LONG_TEXT_CHUNK, **chunk)
                for text, spans in documents(sections)
            ]
        ),
    }
    out = {}
    for name, call in calls.items():
        started = time.perf_counter()
        vectors = call()
        out[name] = (vectors, time.perf_counter() - started)
        print(f"{name}: {len(vectors)} vectors in {out[name][1]:.0f} s", file=sys.stderr)
    return out


def report(
    results: Mapping[str, tuple[np.ndarray, float]],
    queries: np.ndarray,
    subsets: Mapping[str, np.ndarray],
    facts: Sequence[str],
) -> str:
    """The markdown table, one row per system: Recall@1 and MRR over each subset of the
    queries (a boolean mask), and the seconds; then the facts as a list."""
    head = "".join(f" R@1, {name} ({m.sum()}) | MRR, {name} |" for name, m in subsets.items())
    lines = [f"| system |{head} seconds |", "|---|" + "---:|" * (2 * len(subsets) + 1)]
    answers = list(range(len(queries)))
    for name, (vectors, seconds) in results.items():
        rank = ranks(unit(queries) @ unit(vectors).T, answers)
        cells = "".join(
            f" {recall_at_1(rank[m]):.3f} | {mean_reciprocal_rank(rank[m]):.3f} |"
            for m in subsets.values()
        )
        lines.append(f"| {name} |{cells} {seconds:.0f} |")
    return "\n".join([*lines, "", *(f"- {fact}" for fact in facts)]) + "\n"


BEGIN, END = "<!-- long_text_retrieval.py writes from here -->", "<!-- to here -->"


def write_figure(path: Path, table: str) -> None:
    """Put ``table`` between BEGIN and END in ``path``, the text around them kept (appended
    with the markers if they are not there)."""
    text = path.read_text() if path.exists() else ""
    head, _, rest = text.partition(BEGIN)
    tail = rest.partition(END)[2] if END in rest else "\n"
    path.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")


def main() -> None:
    from pydoc_data.topics import topics

    from bertserve.client.tokenizer import load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--repo", help="model repository: start a server on it for the run")
    where.add_argument("--target", help="HOST:PORT of a running server")
    parser.add_argument("--model", default="minilm", help="model name (default minilm)")
    parser.add_argument("--variant", default="", help="variant (default the server's)")
    parser.add_argument("--min-tokens", type=int, default=128, help="shortest section kept")
    parser.add_argument("--max-sections", type=int, default=0, help="sample (0: all)")
    parser.add_argument("--chunk-tokens", type=int, default=0, help="0: the server's largest")
    parser.add_argument("--chunk-overlap", type=int, default=None, help="default chunk/8")
    parser.add_argument("--tokenizer", help="tokenizer.json (default: the repo's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/long-documents.md", help="'-': print only")
    args = parser.parse_args()
    if args.tokenizer is None and args.repo is None:
        parser.error("--target needs --tokenizer (the model's tokenizer.json or its folder)")
    found = args.tokenizer or next((Path(args.repo) / args.model).glob("*/tokenizer.json"))
    lengths_of = load_tokenizer(found).lengths
    command = shlex.join(["python", "scripts/long_text_retrieval.py", *sys.argv[1:]])
    with started_server(args.repo) if args.repo else nullcontext(args.target) as target:
        embedder = Embedder(target, args.model, args.variant)
        sections = build_corpus(
            topics,
            lengths_of,
            min_tokens=args.min_tokens,
            max_sections=args.max_sections,
            seed=args.seed,
        )
        chunk = {"chunk_tokens": args.chunk_tokens}
        if args.chunk_overlap is not None:
            chunk["chunk_overlap"] = args.chunk_overlap
        results = run_systems(embedder, sections, chunk)
        queries = embedder.sentences([s.query for s in sections], batch=64, truncate=True)
    lengths = np.array(lengths_of([s.text for s in sections]))
    before = np.array(lengths_of([s.text[: s.query_at] for s in sections]))
    info = embedder.info
    window = args.chunk_tokens or info.chunk_tokens
    overlap = args.chunk_overlap if args.chunk_overlap is not None else window // 8
    # Truncation keeps max_length - 2 content tokens: a query after that many is unseen.
    subsets = {
        "all": np.ones(len(sections), bool),
        "long sections": lengths > info.max_length,
        "query past the window": before >= info.max_length,
    }
    from bertserve.bench.load import cpu_description

    grouped = documents(sections)
    shared = sum(len(spans) for _, spans in grouped if len(spans) > 1)

    facts = [
        f"corpus: Python {sys.version.split()[0]}'s `pydoc_data.topics`: {len(sections)} "
        f"sections of {len({s.topic for s in sections})} topics (at least {args.min_tokens} "
        f"tokens{f', a sample of {args.max_sections}' if args.max_sections else ''}), one "
        f"query each; tokens per section: median {statistics.median(lengths):.0f}, max "
        f"{lengths.max()}, total {lengths.sum()}; {subsets['long sections'].sum()} longer than "
        f"the window, {subsets['query past the window'].sum()} with the query past it",
        f"late chunking: {len(grouped)} documents (the topics), the longest "
        f"{max(len(text) for text, _ in grouped)} characters; {shared} sections share theirs "
        "with others",
        f"model: {embedder.answered_by}; window {info.max_length} tokens; CHUNK windows of "
        f"{window} content tokens overlapping by {overlap}",
        f"{cpu_description()}; load average {os.getloadavg()[0]:.1f} when done (the seconds "
        "are one client's calls in a row, on cores shared with whatever else ran)",
        f"command: `{command}`",
    ]
    table = report(results, queries, subsets, facts)
    print(table)
    if args.out != "-":
        write_figure(Path(args.out), table)


if __name__ == "__main__":
    main()
