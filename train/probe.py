"""`bertserve probe`: frozen features against fine-tuning, the BERT paper's feature-based
comparison (Devlin et al. 2019, table 7) on real data, served by our own export.

Features come from a running server through the client (every hidden state and the pooler
of each text in one Embed pass); a logistic regression is trained on each choice: CLS and
mean of every layer 0..L, pooler, and concat_last_4 / sum_last_4 / mean_all of the CLS and
mean vectors. Beside them: the fine-tuned model's labels over Classify and a TF-IDF (1-2
grams) logistic regression. Needs the client and scikit-learn ([train]); no torch.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .data import Dataset, Split

if TYPE_CHECKING:
    from bertserve.client import Client

BATCH = 32  # texts per Embed request (a few MB of hidden states each, sent over EmbedStream)


@dataclass
class Row:
    """One line of the table."""

    features: str
    kind: str  # "layer", "aggregate", "pooler", "fine-tuned", "baseline"
    dimension: int
    accuracy: float
    macro_f1: float
    layer: int | None = None
    pooling: str | None = None


@dataclass
class Features:
    """Per text: the CLS and mean vectors of every layer, and the pooler output."""

    cls: np.ndarray  # (layers + 1, texts, hidden) float32
    mean: np.ndarray  # (layers + 1, texts, hidden) float32
    pooler: np.ndarray  # (texts, hidden) float32

    def choices(self) -> Iterator[tuple[str, str, int | None, str | None, np.ndarray]]:
        """(name, kind, layer, pooling, (texts, width) matrix) of every frozen choice."""
        top = self.cls.shape[0] - 1
        for pooling, states in (("cls", self.cls), ("mean", self.mean)):
            for layer in range(top + 1):
                yield f"{pooling} layer {layer}", "layer", layer, pooling, states[layer]
        yield "pooler", "pooler", None, "pooler", self.pooler
        for pooling, states in (("cls", self.cls), ("mean", self.mean)):
            if top >= 4:
                last_4 = states[top - 3 :]
                yield (
                    f"{pooling} concat_last_4",
                    "aggregate",
                    None,
                    pooling,
                    np.concatenate(list(last_4), axis=-1),
                )
                yield f"{pooling} sum_last_4", "aggregate", None, pooling, last_4.sum(axis=0)
            yield f"{pooling} mean_all", "aggregate", None, pooling, states[1:].mean(axis=0)


def _batches(split: Split, size: int) -> Iterator[list[str]]:
    for start in range(0, len(split), size):
        yield split.texts[start : start + size]


def fetch_features(
    client: Client, model: str, split: Split, progress: bool = True, variant: str | None = None
) -> Features:
    """Every hidden state (pooled here, per text) and the pooler of ``split``'s texts, over
    EmbedStream. Text pairs are not probed (the server's hidden states need single texts)."""
    from tqdm.auto import tqdm

    info = client.info(model)
    layers, hidden = info.num_layers + 1, info.hidden_size
    cls = np.zeros((layers, len(split), hidden), dtype=np.float32)
    mean = np.zeros_like(cls)
    pooler = np.zeros((len(split), hidden), dtype=np.float32)
    results = client.embed_stream(
        _batches(split, BATCH),
        layers="all",
        pooling="pooler",
        model=model,
        variant=variant,
        truncate=True,
    )
    row = 0
    with tqdm(total=len(split), unit="text", disable=not progress, file=sys.stderr) as bar:
        for result in results:
            count = len(result)
            pooler[row : row + count] = result.sentence_embedding
            for layer, per_text in result.hidden_states.items():
                for offset, states in enumerate(per_text):
                    cls[layer, row + offset] = states[0]
                    mean[layer, row + offset] = states.mean(axis=0)
            row += count
            bar.update(count)
    return Features(cls, mean, pooler)


def _scores(truth: list[str], predicted: list[str] | np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return (
        float(accuracy_score(truth, predicted)),
        float(f1_score(truth, predicted, average="macro")),
    )


def logistic_regression(
    train: np.ndarray, train_labels: list[str], test: np.ndarray, seed: int
) -> np.ndarray:
    """Predicted labels of ``test`` from a standardised logistic regression fit on ``train``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    model.fit(train, train_labels)
    return model.predict(test)


def tfidf_baseline(train: Split, test: Split, seed: int) -> tuple[float, float]:
    """TF-IDF of word 1-2 grams + logistic regression: (accuracy, macro-F1) on ``test``.

    C=10: on the sentiment split this reproduces the published reference (accuracy 0.767,
    macro-F1 0.744); scikit-learn's default C=1 under-fits the 1-2 gram vocabulary (0.757/0.729).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2)),
        LogisticRegression(C=10, max_iter=2000, random_state=seed),
    )
    model.fit(train.texts, train.labels)
    return _scores(test.labels, model.predict(test.texts))


def classify_labels(
    client: Client, model: str, split: Split, variant: str | None = None
) -> list[str]:
    """The served labels of ``split`` over Classify, in batches."""
    labels: list[str] = []
    for start in range(0, len(split), 64):
        texts = split.texts[start : start + 64]
        pairs = split.pairs[start : start + 64] if split.pairs else None
        result = client.classify(
            texts, pairs=pairs, top_k=1, model=model, variant=variant, truncate=True
        )
        labels.extend(result.labels)
    return labels


def spread_rows(split: Split, rows: int) -> Split:
    """``rows`` rows taken evenly through the split (0: all). Not the first ones: a file
    sorted by label (``bertserve data sentiment`` writes them so) would give one class."""
    if not rows or rows >= len(split):
        return split
    picked = [index * len(split) // rows for index in range(rows)]
    pairs = [split.pairs[i] for i in picked] if split.pairs else None
    return Split([split.texts[i] for i in picked], pairs, [split.labels[i] for i in picked])


def training_rows(data: Dataset) -> Split:
    """Every row outside the test split: the training and validation rows."""
    a, b = data.train, data.validation
    pairs = (a.pairs or []) + (b.pairs or []) if a.pairs or b.pairs else None
    return Split(a.texts + b.texts, pairs, a.labels + b.labels)


def probe(
    client: Client,
    data: Dataset,
    *,
    model: str,
    classifier: str | None = None,
    variant: str | None = None,
    classifier_variant: str | None = None,
    train_rows: int = 0,
    test_rows: int = 0,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run every choice; returns {rows: [...], best_frozen, ...} (JSON-ready).

    The logistic regressions and TF-IDF train on the training and validation rows (all but
    the test split), or on ``train_rows`` of them spread evenly (``spread_rows``); all are
    scored on the test split (or ``test_rows`` of it, spread the same way).
    """
    train = spread_rows(training_rows(data), train_rows)
    test = spread_rows(data.test, test_rows)
    rows: list[Row] = []
    started = time.perf_counter()

    def note(message: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    if classifier:
        note(f"classifying {len(test)} test rows with {classifier} over Classify")
        labels = classify_labels(client, classifier, test, classifier_variant)
        accuracy, f1 = _scores(test.labels, labels)
        rows.append(Row(f"fine-tuned {classifier} (Classify)", "fine-tuned", 0, accuracy, f1))
    note(f"TF-IDF baseline on {len(train)} rows")
    accuracy, f1 = tfidf_baseline(train, test, seed)
    rows.append(Row("TF-IDF 1-2 grams + logistic regression", "baseline", 0, accuracy, f1))
    note(f"fetching every hidden state of {len(train)} + {len(test)} texts from {model}")
    train_features = fetch_features(client, model, train, progress, variant)
    test_features = fetch_features(client, model, test, progress, variant)
    for (name, kind, layer, pooling, x_train), (*_, x_test) in zip(
        train_features.choices(), test_features.choices(), strict=True
    ):
        predicted = logistic_regression(x_train, train.labels, x_test, seed)
        accuracy, f1 = _scores(test.labels, predicted)
        rows.append(Row(name, kind, x_train.shape[1], accuracy, f1, layer, pooling))
        note(f"{name}: accuracy {accuracy:.4f}, macro-F1 {f1:.4f}")
    frozen = [r for r in rows if r.kind in ("layer", "aggregate", "pooler")]
    best = max(frozen, key=lambda r: (r.macro_f1, r.accuracy))
    report = {
        "model": model,
        "variant": variant or "the server's default",
        "classifier": classifier,
        "classifier_variant": classifier_variant or "the server's default",
        "data": data.source,
        "data_sha256": data.sha256,
        "train_rows": len(train),
        "test_rows": len(test),
        "rows": [asdict(r) for r in rows],
        "best_frozen": asdict(best),
        "seconds": round(time.perf_counter() - started, 1),
    }
    tuned = next((r for r in rows if r.kind == "fine-tuned"), None)
    if tuned:
        report["gap_to_fine_tuned_points"] = {
            "accuracy": round(100 * (tuned.accuracy - best.accuracy), 2),
            "macro_f1": round(100 * (tuned.macro_f1 - best.macro_f1), 2),
        }
    return report


def markdown(report: dict) -> str:
    """The report as a Markdown table with a closing line on the best frozen choice."""
    lines = [
        f"Test split: {report['test_rows']} rows; logistic regressions trained on "
        f"{report['train_rows']} rows; features from `{report['model']}`.",
        "",
        "| features | dim | accuracy | macro-F1 |",
        "| --- | --- | --- | --- |",
    ]
    for row in report["rows"]:
        dim = row["dimension"] or "-"
        lines.append(
            f"| {row['features']} | {dim} | {row['accuracy']:.4f} | {row['macro_f1']:.4f} |"
        )
    best = report["best_frozen"]
    closing = (
        f"Best frozen choice: {best['features']} (accuracy {best['accuracy']:.4f}, macro-F1 "
        f"{best['macro_f1']:.4f})"
    )
    gap = report.get("gap_to_fine_tuned_points")
    if gap:
        closing += (
            f"; fine-tuning is {gap['accuracy']:+.2f} points of accuracy and "
            f"{gap['macro_f1']:+.2f} of macro-F1 above it"
        )
    return "\n".join([*lines, "", closing + "."])


def plot(report: dict, path: Path) -> None:
    """A PNG of test accuracy by layer (CLS and mean), with the other choices as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    for pooling, marker in (("cls", "o"), ("mean", "s")):
        layers = [r for r in rows if r["kind"] == "layer" and r["pooling"] == pooling]
        axes.plot(
            [r["layer"] for r in layers],
            [r["accuracy"] for r in layers],
            marker=marker,
            label=f"{pooling.upper() if pooling == 'cls' else pooling} of layer",
        )
    aggregates = [r for r in rows if r["kind"] == "aggregate"]
    best_aggregate = max(aggregates, key=lambda r: r["accuracy"]) if aggregates else None
    lines = [r for r in rows if r["kind"] in ("pooler", "fine-tuned", "baseline")]
    styles = iter(zip(["--", ":", "-.", (0, (5, 1))], ["C2", "C3", "C4", "C5"], strict=True))
    for r in [*lines, *([best_aggregate] if best_aggregate else [])]:  # the best aggregate only
        style, color = next(styles)
        axes.axhline(
            r["accuracy"], linestyle=style, color=color, linewidth=1.2, label=r["features"]
        )
    axes.set_xlabel("layer (0 = embedding output)")
    axes.set_ylabel("test accuracy")
    axes.set_title(f"Frozen {report['model']} features + logistic regression vs fine-tuning")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_report(report: dict, out: Path) -> dict[str, Path]:
    """probe.json, probe.md and probe.png in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "probe.json", "markdown": out / "probe.md", "png": out / "probe.png"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(markdown(report) + "\n")
    plot(report, paths["png"])
    return paths
