"""scripts/long_text_retrieval.py without a model: the corpus (sections, queries, the late
chunking documents) from hand-made topics, and Recall@1/MRR on rankings computed by hand."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "long_text_retrieval.py"
spec = importlib.util.spec_from_file_location("long_text_retrieval", SCRIPT)
retrieval = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = retrieval  # dataclasses look their module up by name
spec.loader.exec_module(retrieval)

TOPIC = """\
The loop statements
*******************

Python has two loop statements that repeat a block of code.

The while statement
===================

The while statement runs its body as long as an expression is true.
When the expression is false the loop ends and the else clause, if
present, runs once before the next statement.

   while x < 10:
       x += 1

A break statement inside the body leaves the loop at once without
running the else clause at all.

The for statement
=================

The for statement iterates over the items of any iterable object.
Each item is assigned to the target list in turn before the body runs.
The else clause of a for loop runs when the iterable is exhausted.

>>> for item in range(3): print(item)
"""


def words(texts: list[str]) -> list[int]:
    return [len(text.split()) for text in texts]


def test_sections_are_cut_at_headings_and_keep_their_titles() -> None:
    sections = retrieval.split_sections("An untitled start.\n\n" + TOPIC)
    assert [title for title, _ in sections] == [
        "",
        "The loop statements",
        "The while statement",
        "The for statement",
    ]
    assert sections[0][1] == "An untitled start."
    title, text = sections[2]
    assert text.startswith("The while statement\n\nThe while statement runs")
    assert "=====" not in text and text.endswith("running the else clause at all.")


def test_sentences_end_at_full_stops_before_capitals_and_at_paragraph_ends() -> None:
    text = "First one. Second\n   one wraps here.\n\nThird (e.g. this) one? Fourth"
    spans = retrieval.sentence_spans(text)
    assert [text[a:b] for a, b in spans] == [
        "First one.",
        "Second\n   one wraps here.",
        "Third (e.g. this) one?",
        "Fourth",
    ]


@pytest.mark.parametrize(
    ("sentence", "prose"),
    [
        ("The for statement iterates over the items of any iterable object.", True),
        ('A class can only be parameterized if it defines "__class_getitem__()".', True),
        ("Too short to be a query.", False),
        ("the for statement iterates over the items of any iterable object.", False),
        ("The for statement iterates over the items of any iterable object", False),
        (">>> The for statement iterates over the items of any iterable object.", False),
        ("| The for statement | iterates over the items | of any iterable object. |", False),
        ("Call f(x[0], y[1]) == g(x[2], {3: 4}) or h(a[5]) + k(b[6]) * m(c[7]).", False),
    ],
)
def test_queries_are_prose_sentences(sentence: str, prose: bool) -> None:
    assert retrieval.is_prose(sentence) is prose


def test_a_query_is_never_the_title_or_first_sentence_and_is_removed_where_it_was() -> None:
    (_, text) = retrieval.split_sections(TOPIC)[1]
    seen = set()
    for seed in range(50):
        rest, query, at = retrieval.take_query(text, random.Random(seed), skip=2)
        seen.add(query)
        assert not query.startswith("The while statement runs")
        assert query not in " ".join(rest.split())
        assert rest[:at] == text[:at]
        assert " ".join(text[at:].split()).startswith(query)
    assert seen == {
        "When the expression is false the loop ends and the else clause, if present, runs "
        "once before the next statement.",
        "A break statement inside the body leaves the loop at once without running the else "
        "clause at all.",
    }
    one = retrieval.take_query(text, random.Random(7), skip=2)
    assert one == retrieval.take_query(text, random.Random(7), skip=2)
    assert (
        retrieval.take_query(
            "Title\n\nOnly one sentence in this section here.", random.Random(0), skip=2
        )
        is None
    )


def test_the_corpus_keeps_long_sections_with_a_query_once_each() -> None:
    short = "The break topic\n***************\n\nA break ends a loop.\n"
    # "while" repeats a section of the longer "loops"; "quote" repeats one of its sentences.
    while_only = TOPIC[TOPIC.index("The while statement\n") : TOPIC.index("The for statement\n")]
    quoting = (
        "Quoting\n*******\n\nThis topic quotes another one here. Each item is assigned to the "
        "target list in turn before the body runs.\n"
    )
    topics = {"loops": TOPIC, "while": while_only, "break": short, "quote": quoting}
    for seed in range(10):
        corpus = retrieval.build_corpus(topics, words, min_tokens=30, seed=seed)
        assert [(s.topic, s.title) for s in corpus] == [
            ("loops", "The while statement"),
            ("loops", "The for statement"),
        ]
        # the only other prose sentence of "for" is also in "quote": never drawn
        assert corpus[1].query == (
            "The else clause of a for loop runs when the iterable is exhausted."
        )
        for section in corpus:
            assert section.query not in " ".join(section.text.split())
        assert corpus == retrieval.build_corpus(topics, words, min_tokens=30, seed=seed)
    # lengths are of the texts without their queries: 34 words for "for", 41 or 43 for "while"
    assert [s.title for s in retrieval.build_corpus(topics, words, min_tokens=35)] == [
        "The while statement"
    ]
    assert retrieval.build_corpus(topics, words, min_tokens=44) == []
    sample = retrieval.build_corpus(topics, words, min_tokens=1, max_sections=1, seed=5)
    assert len(sample) == 1
    assert sample == retrieval.build_corpus(topics, words, min_tokens=1, max_sections=1, seed=5)


def test_late_chunking_spans_cover_each_section_in_code_points() -> None:
    def section(topic: str, text: str) -> object:
        return retrieval.Section(topic, "t", text, "q", 0)

    sections = [
        section("a", "한국어 문장입니다. 😀 emoji"),
        section("a", "second"),
        section("b", "x"),
    ]
    docs = retrieval.documents(sections)
    assert [text for text, _ in docs] == ["한국어 문장입니다. 😀 emoji\n\nsecond", "x"]
    assert [text[a:b] for text, spans in docs for a, b in spans] == [s.text for s in sections]
    assert docs[0][1] == [(0, 18), (20, 26)]  # the emoji is one code point
    with pytest.raises(ValueError, match="consecutive"):
        retrieval.documents([sections[0], sections[2], sections[1]])


def test_recall_and_mrr_of_rankings_worked_by_hand() -> None:
    similarity = np.array(
        [
            [0.9, 0.1, 0.3],  # query 0: its item first -> rank 1
            [0.8, 0.2, 0.5],  # query 1: two items above it -> rank 3
            [0.1, 0.7, 0.6],  # query 2: one above -> rank 2
        ]
    )
    rank = retrieval.ranks(similarity, [0, 1, 2])
    assert rank.tolist() == [1, 3, 2]
    assert retrieval.recall_at_1(rank) == pytest.approx(1 / 3)
    assert retrieval.mean_reciprocal_rank(rank) == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    # a tie counts against the answer; answers need not be the diagonal
    assert retrieval.ranks(np.array([[0.5, 0.5, 0.1]]), [0]).tolist() == [2]
    assert retrieval.ranks(np.array([[0.2, 0.9, 0.1]]), [1]).tolist() == [1]


def test_the_table_scores_every_system_on_every_subset() -> None:
    queries = np.array([[1.0, 0.0], [0.0, 2.0]])
    results = {
        "right": (np.array([[3.0, 0.1], [0.1, 1.0]]), 1.2),
        "swapped": (np.array([[0.0, 1.0], [1.0, 0.0]]), 7.0),
    }
    subsets = {"all": np.array([True, True]), "long": np.array([False, True])}
    table = retrieval.report(results, queries, subsets, ["a fact"]).splitlines()
    assert table[0] == "| system | R@1, all (2) | MRR, all | R@1, long (1) | MRR, long | seconds |"
    assert table[2] == "| right | 1.000 | 1.000 | 1.000 | 1.000 | 1 |"
    assert table[3] == "| swapped | 0.000 | 0.500 | 0.000 | 0.500 | 7 |"
    assert table[-1] == "- a fact"


def test_the_figure_replaces_only_its_own_part_of_the_page(tmp_path: Path) -> None:
    page = tmp_path / "long-documents.md"
    retrieval.write_figure(page, "| first |\n")
    assert page.read_text() == f"{retrieval.BEGIN}\n| first |\n{retrieval.END}\n"
    page.write_text(f"# Title\n\nWhy.\n\n{page.read_text()}\nAfter.\n")
    retrieval.write_figure(page, "| second |\n")
    assert page.read_text() == (
        f"# Title\n\nWhy.\n\n{retrieval.BEGIN}\n| second |\n{retrieval.END}\n\nAfter.\n"
    )
