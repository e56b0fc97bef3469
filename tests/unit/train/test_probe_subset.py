"""`probe --train-rows N` on a file sorted by label still sees every label."""

from bertserve.train.data import Split
from bertserve.train.probe import spread_rows


def test_rows_are_taken_evenly_through_a_split_sorted_by_label():
    labels = ["negative"] * 50 + ["neutral"] * 30 + ["positive"] * 20
    split = Split([f"text {i}" for i in range(100)], None, labels)
    subset = spread_rows(split, 10)
    assert len(subset) == 10
    assert set(subset.labels) == {"negative", "neutral", "positive"}
    for text, label in zip(subset.texts, subset.labels, strict=True):
        assert split.labels[int(text.split()[1])] == label  # each row kept whole


def test_pairs_follow_their_rows_and_zero_means_all():
    split = Split(["a", "b", "c", "d"], ["A", "B", "C", "D"], ["x", "x", "y", "y"])
    subset = spread_rows(split, 2)
    assert subset.texts == ["a", "c"] and subset.pairs == ["A", "C"] and subset.labels == ["x", "y"]
    assert spread_rows(split, 0) is split and spread_rows(split, 9) is split
