"""`bertserve probe` on a small subset of the real data, against a live server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from bertserve.client import Client
from bertserve.train.data import Split, load_dataset
from bertserve.train.probe import fetch_features, spread_rows
from training import bertserve_cli


def test_features_are_what_embed_serves(classifier_server):
    texts = ["I love Paris", "The quick brown fox jumps over the lazy dog.", "hello"]
    with Client(classifier_server.target) as client:
        features = fetch_features(client, "minilm", Split(texts, None, ["a"] * 3), progress=False)
        top = client.info("minilm").num_layers
        for pooling, got in (("cls", features.cls[top]), ("mean", features.mean[top])):
            expected = client.embed(texts, model="minilm", pooling=pooling).sentence_embedding
            np.testing.assert_allclose(got, expected, atol=1e-5)
        pooler = client.embed(texts, model="minilm", pooling="pooler").sentence_embedding
        np.testing.assert_allclose(features.pooler, pooler, atol=1e-5)
        layer_2 = client.embed(texts, model="minilm", layers=[2]).hidden_states[2]
        np.testing.assert_allclose(features.mean[2], [h.mean(0) for h in layer_2], atol=1e-5)


def test_probe_on_a_small_subset(classifier_server, small_sentiment: Path, tmp_path: Path):
    out = tmp_path / "probe"
    done = bertserve_cli(
        "probe",
        *("--data", str(small_sentiment), "--target", classifier_server.target),
        *("--model", "minilm", "--classifier", "minilm-sentiment", "--out", str(out)),
        *("--train-rows", "240", "--test-rows", "60", "--no-progress"),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "probe.json").read_text())
    names = [row["features"] for row in report["rows"]]
    assert names[:2] == [
        "fine-tuned minilm-sentiment (Classify)",
        "TF-IDF 1-2 grams + logistic regression",
    ]
    layers = 6
    for pooling in ("cls", "mean"):
        assert [f"{pooling} layer {i}" for i in range(layers + 1)] == [
            n for n in names if n.startswith(f"{pooling} layer")
        ]
        for aggregate in ("concat_last_4", "sum_last_4", "mean_all"):
            assert f"{pooling} {aggregate}" in names
    assert "pooler" in names and len(names) == 2 + 2 * (layers + 1) + 1 + 6
    dims = {row["features"]: row["dimension"] for row in report["rows"]}
    assert dims["mean concat_last_4"] == 4 * 384 and dims["cls layer 3"] == 384
    assert all(0 <= row["accuracy"] <= 1 and 0 <= row["macro_f1"] <= 1 for row in report["rows"])
    assert report["test_rows"] == 60 and report["train_rows"] == 240
    # the fine-tuned row is what Classify serves
    test = spread_rows(load_dataset(small_sentiment).test, 60)  # the rows probe scored
    with Client(classifier_server.target) as client:
        labels = client.classify(test.texts, model="minilm-sentiment").labels
    accuracy = np.mean([a == b for a, b in zip(labels, test.labels, strict=True)])
    assert abs(report["rows"][0]["accuracy"] - accuracy) < 1e-9
    assert "gap_to_fine_tuned_points" in report
    assert (out / "probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "probe.md").read_text()
    assert "| features | dim | accuracy | macro-F1 |" in markdown
    assert "Best frozen choice" in markdown
    assert markdown.strip() in done.stdout
