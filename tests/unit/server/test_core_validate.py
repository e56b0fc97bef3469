"""The core's validation against plain model facts: no model, no gRPC."""

from __future__ import annotations

import numpy as np
import pytest
from bertserve.server.core.request import MAX_ID_BYTES, MAX_LAYER_ENTRIES, Options, Tokens
from bertserve.server.core.request import TokenSequence as Seq
from bertserve.server.core.validate import (
    ModelFacts,
    answer_bytes,
    check_identifiers,
    feature_spec,
    token_sequences,
)
from bertserve.server.errors import FailedPrecondition, InvalidArgument

FACTS = ModelFacts(num_layers=6, hidden_size=8, max_length=5, vocab_size=100)


def refused(call, *args, error=InvalidArgument) -> InvalidArgument:
    with pytest.raises(error) as caught:
        call(*args)
    return caught.value


def test_the_default_pooling_applies_only_when_nothing_else_is_asked():
    assert feature_spec(Options(), FACTS).pooling == "cls"
    assert feature_spec(Options(token_embeddings=True), FACTS).pooling is None
    assert feature_spec(Options(token_embeddings=True, pooling="model"), FACTS).pooling == "cls"
    assert feature_spec(Options(pooling="mean", layers=(1,)), FACTS).pooling == "mean"


def test_layers_are_made_absolute_deduplicated_and_range_checked():
    spec = feature_spec(Options(pooling="none", layers=(-1, 6, 0, -7)), FACTS)
    assert spec.layers == (6, 0)
    error = refused(feature_spec, Options(layers=(1, 7)), FACTS)
    assert error.field == ("layers", 1) and "=7: no such layer; allowed -7..6" in error.detail
    assert feature_spec(Options(all_layers=True), FACTS).layers == tuple(range(7))


def test_a_huge_layers_list_is_refused_by_its_count():
    error = refused(feature_spec, Options(layers=(0,) * (MAX_LAYER_ENTRIES + 1)), FACTS)
    assert error.field == ("layers",) and f"at most {MAX_LAYER_ENTRIES}" in error.detail


def test_options_that_contradict_the_model_or_each_other():
    small = ModelFacts(num_layers=3)
    assert "needs 4" in refused(feature_spec, Options(aggregate="sum_last_4"), small).detail
    error = refused(
        feature_spec, Options(pooling="none", token_embeddings=True, normalize=True), FACTS
    )
    assert error.field == ("normalize",)
    assert refused(feature_spec, Options(pooling="none"), FACTS).field == ("outputs",)
    refused(feature_spec, Options(logits=True), FACTS, error=FailedPrecondition)
    with_head = ModelFacts(has_logits=True)
    spec = feature_spec(Options(logits=True), with_head)
    assert spec.logits and spec.pooling is None


def test_identifiers_have_a_maximum_length():
    check_identifiers("x" * MAX_ID_BYTES, "m", "")
    assert refused(check_identifiers, "x" * (MAX_ID_BYTES + 1), "m", "").field == ("id",)
    assert refused(check_identifiers, "", "é" * 200, "").field == ("model",)  # 400 bytes


def test_answer_bytes_count_padding_when_the_front_door_pads():
    spec = feature_spec(Options(token_embeddings=True), FACTS)
    assert answer_bytes(spec, [508, 3, 3], 8, padded=False) == 514 * 8 * 4
    assert answer_bytes(spec, [508, 3, 3], 8, padded=True) == 3 * 508 * 8 * 4


def test_token_sequences_are_checked_with_field_paths():
    def check(*sequences: Seq, truncate: bool = False) -> InvalidArgument:
        return refused(token_sequences, Tokens(list(sequences)), FACTS, truncate)

    assert check(Seq([])).field == ("sequences", 0, "input_ids")
    assert check(Seq([1, 2], [1])).field == ("sequences", 0, "attention_mask")
    error = check(Seq([1, 2]), Seq([1, 100]))
    assert error.field == ("sequences", 1, "input_ids", 1) and error.detail.startswith("=100")
    assert check(Seq([1, 2], [1, 2])).field == ("sequences", 0, "attention_mask", 1)
    assert check(Seq([1, 2], None, [0, 2])).field == ("sequences", 0, "token_type_ids", 1)
    assert "all 0" in check(Seq([1, 2, 3], [0, 0, 0])).detail
    assert "longer than the model's limit of 5" in check(Seq(list(range(6)))).detail


def test_truncate_keeps_the_limit_and_reads_only_that_prefix():
    class Huge(list):
        """A sequence whose elements past the limit must never be read."""

        def __len__(self) -> int:
            return 15_000_000

        def __getitem__(self, index):
            assert isinstance(index, slice) and index.stop <= FACTS.max_length
            return [7] * index.stop

    (sequence,) = token_sequences(Tokens([Seq(Huge())]), FACTS, True)
    assert sequence.input_ids.tolist() == [7] * 5 and sequence.truncated == 15_000_000 - 5
    (kept,) = token_sequences(Tokens([Seq(np.array([1, 2, 3]))]), FACTS, False)
    assert kept.attention_mask.tolist() == [1, 1, 1] and kept.token_type_ids.tolist() == [0] * 3
