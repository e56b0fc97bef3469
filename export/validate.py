"""Every output of every variant against PyTorch, on sentences of mixed lengths with padding;
for a classifier also its labels, on labelled data when there is some."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers import BertModel, PreTrainedTokenizerFast

# Mixed lengths, so the batch carries real padding; and mixed text (tweets, accents, Korean,
# Japanese, Arabic, Russian, emoji, numbers, a URL, code, a run-on of 180 tokens), where
# quantization errors show. The hard cases come first: one- and two-word texts, what search
# systems send most, lose the most to int8; each text is also run alone (see validate_variant).
SENTENCES = (
    "ok",
    "Hi",
    "thanks a lot",
    "hello",
    "42",
    "3.14159 × 2,500 = 7853.98",
    "https://www.example.com/search?q=bert+embeddings&page=2",
    "for (int i = 0; i < n; ++i) { total += values[i]; }",
    "🎉🔥😂👍",
    "안녕하세요",
    "ありがとうございます",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "Привет! Как дела? Сегодня в Москве идёт снег.",
    "I love Paris",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street while people walk by and listen.",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates "
    "again, surprising many analysts who had expected a pause.",
    "What is the capital of France?",
    "Dogs are loyal animals.",
    "The weather today is sunny with a chance of rain in the evening.",
    "@SouthwestAir my flight got cancelled AGAIN 😡😡 #fail http://t.co/xyz",
    "omg best concert everrr!!! 🎉🎶❤️ can't wait 4 next year lol",
    "Le café de la gare était fermé, alors nous avons marché jusqu'à l'hôtel sous la pluie.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein, sagte der Pilot zögernd.",
    "¿Dónde está la biblioteca? Necesito devolver tres libros antes del miércoles.",
    "서울의 날씨는 오늘 맑고 따뜻합니다. 공원에 산책하러 갈까요?",
    "東京タワーは夜になるときれいにライトアップされます。",
    "Temperature: -3.5°C, wind 45 km/h NNE, humidity 87% — expect ice on the A9 after 22:00.",
    "def main(): return sum(x ** 2 for x in range(10))  # a line of code",
    "The committee, which had been meeting since early morning and which included "
    "representatives of every region, every union and most of the larger employers, finally "
    "agreed late in the evening, after a long and sometimes bitter debate about pensions, "
    "working hours, the cost of training apprentices, the future of the coal mines in the "
    "north and the question of who would pay for the new railway line, that it would publish "
    "no statement at all until the minister had returned from her visit abroad and had been "
    "given the chance to read the full report, which ran to more than four hundred pages and "
    "which, according to those who had seen it, said very little that was new.",
)
MAX_ABS_ERROR = {"fp32": 1e-4, "fp32-opt": 1e-4}  # int8 and fp16 are judged by cosine
# A variant is validated (not flagged) only when every text's mean-pooled vector is within this
# cosine of PyTorch's, alone and batched, and when a text's mean-pooled unit vector moves by at
# most MAX_BATCH_DELTA in any coordinate between alone and inside the batch of long texts: an
# index must not depend on who else was in the batch. server/models.py reads the same numbers.
MIN_MEAN_COSINE = 0.995
MAX_BATCH_DELTA = 1e-3
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class VariantReport:
    """How one variant compares with PyTorch."""

    variant: str
    max_abs_error: dict[str, float] = field(default_factory=dict)  # per output
    cosine: dict[str, float] = field(
        default_factory=dict
    )  # worst over sentences: cls, pooler, mean
    ran: bool = True
    note: str = ""
    classification: dict = field(default_factory=dict)  # labels against PyTorch's
    # mean-pooled unit vectors, each text alone against the same text in the padded batch:
    # {"max_abs": worst coordinate change, "text": the text it happened to}
    batch_invariance: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        limit = MAX_ABS_ERROR.get(self.variant)
        if limit is not None:
            return self.ran and max(self.max_abs_error.values()) <= limit
        return True

    @property
    def flagged(self) -> bool:
        """Ran, but misses a threshold: cosine to PyTorch or alone-vs-batched change."""
        return self.ran and not meets_thresholds(
            self.cosine.get("mean", 1.0), self.batch_invariance.get("max_abs", 0.0)
        )

    @property
    def verdict(self) -> str:
        """What the table prints: ok, FAILED (tolerance) or FLAGGED with the threshold missed."""
        if not self.passed:
            return "FAILED"
        if not self.flagged:
            return "ok"
        missed = []
        if self.cosine.get("mean", 1.0) < MIN_MEAN_COSINE:
            missed.append(f"cos mean < {MIN_MEAN_COSINE}")
        if self.batch_invariance.get("max_abs", 0.0) > MAX_BATCH_DELTA:
            missed.append(f"alone vs batched > {MAX_BATCH_DELTA:.0e}")
        return "FLAGGED: " + ", ".join(missed)

    def as_dict(self) -> dict:
        return {
            "max_abs_error": self.max_abs_error,
            "cosine": self.cosine,
            "batch_invariance": self.batch_invariance,
            "ran": self.ran,
            "passed": self.passed,
            "flagged": self.flagged,
            "validated": self.passed and not self.flagged,
            "thresholds": {
                "cosine.mean": MIN_MEAN_COSINE,
                "batch_invariance.max_abs": MAX_BATCH_DELTA,
            },
            "note": self.note,
            "tolerance": MAX_ABS_ERROR.get(self.variant),
            "sentences": len(SENTENCES),
            **({"classification": self.classification} if self.classification else {}),
        }


def meets_thresholds(worst_mean_cosine: float, batch_max_abs: float) -> bool:
    """The export's verdict on a variant's vectors: close to PyTorch and batch-invariant."""
    return worst_mean_cosine >= MIN_MEAN_COSINE and batch_max_abs <= MAX_BATCH_DELTA


@dataclass(frozen=True)
class LabelledTexts:
    """Texts (and their pairs) a classifier is scored on, with true class ids when known."""

    texts: list[str]
    pairs: list[str] | None = None
    label_ids: list[int] | None = None
    name: str = "validation sentences"


def reference_inputs(
    tokenizer: PreTrainedTokenizerFast, max_length: int = 512
) -> dict[str, np.ndarray]:
    """The validation batch, padded to its longest sentence (cut at the model's
    ``max_length``): (batch, seq) int64 each."""
    batch = tokenizer(
        list(SENTENCES), padding=True, truncation=True, max_length=max_length, return_tensors="np"
    )
    return {name: batch[name].astype(np.int64) for name in INPUTS}


def reference_outputs(model: BertModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """PyTorch's outputs under the ONNX names."""
    with torch.no_grad():
        out = model(
            **{k: torch.from_numpy(v) for k, v in inputs.items()}, output_hidden_states=True
        )
    named = {"logits": out.logits} if getattr(out, "logits", None) is not None else {}
    named.update(last_hidden_state=out.last_hidden_state, pooler_output=out.pooler_output)
    named.update({f"hidden_states.{i}": h for i, h in enumerate(out.hidden_states)})
    return {k: v.numpy() for k, v in named.items()}


def sentence_vectors(outputs: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    """CLS, pooler and mask-weighted mean vectors: (batch, hidden) each."""
    tokens = outputs["last_hidden_state"].astype(np.float64)
    weights = mask[..., None].astype(np.float64)
    return {
        "cls": tokens[:, 0],
        "pooler": outputs["pooler_output"].astype(np.float64),
        "mean": (tokens * weights).sum(1) / weights.sum(1),
    }


def _worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(cos.min())


def validate_variant(
    variant: str,
    model_file: Path,
    inputs: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
) -> VariantReport:
    """Run model_file on the CPU and compare every output with the reference."""
    report = VariantReport(variant)
    try:
        session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, session.run(names, inputs), strict=True))
    except Exception as exc:  # noqa: BLE001 - e.g. fp16 kernels the CPU provider lacks
        report.ran = False
        report.note = f"not run on the CPU provider: {str(exc).splitlines()[0][:200]}"
        return report
    missing = set(reference) - set(got)
    if missing:
        report.ran = False
        report.note = f"outputs missing: {sorted(missing)}"
        return report
    mask = inputs["attention_mask"].astype(bool)
    for name, expected in reference.items():
        actual = got[name].astype(np.float32)
        # padding positions are free to differ (fused attention skips them): compare real tokens
        if actual.ndim == 3:
            report.max_abs_error[name] = float(np.abs(actual[mask] - expected[mask]).max())
        else:
            report.max_abs_error[name] = float(np.abs(actual - expected).max())
    theirs = sentence_vectors(reference, inputs["attention_mask"])
    ours = sentence_vectors(got, inputs["attention_mask"])
    report.cosine = {k: _worst_cosine(ours[k], theirs[k]) for k in ours}
    # Each sentence alone too: int8 quantizes activations with scales of the whole batch, so
    # a short text alone (as a lone caller sends it) can fare worse than in the padded batch.
    alone = [
        sentence_vectors(
            dict(zip(names, session.run(names, _row(inputs, row)), strict=True)),
            _row(inputs, row)["attention_mask"],
        )
        for row in range(len(mask))
    ]
    for kind in report.cosine:
        vectors = np.concatenate([vectors[kind] for vectors in alone])
        report.cosine[kind] = min(report.cosine[kind], _worst_cosine(vectors, theirs[kind]))
    # Bit for bit: the same text alone and inside the batch of long texts, as an index stores it
    alone_mean = _unit(np.concatenate([vectors["mean"] for vectors in alone]))
    delta = np.abs(alone_mean - _unit(ours["mean"])).max(axis=1)
    worst = int(delta.argmax())
    report.batch_invariance = {"max_abs": float(delta[worst]), "text": SENTENCES[worst]}
    return report


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _row(inputs: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    """One sentence of the padded batch, without its padding: (1, length) each."""
    length = int(inputs["attention_mask"][row].sum())
    return {name: value[row : row + 1, :length] for name, value in inputs.items()}


def format_table(model_name: str, reports: list[VariantReport]) -> str:
    """A plain-text table: one row per variant."""
    header = (
        f"{'variant':<10} {'max|Δ| last':>12} {'max|Δ| pooler':>13} {'max|Δ| hidden':>13} "
        f"{'cos cls':>8} {'cos pooler':>10} {'cos mean':>9} {'alone≠batch':>11}  verdict"
    )
    lines = [
        f"validation of {model_name} against PyTorch ({len(SENTENCES)} texts, one- and two-word "
        "ones to a run-on, padded in one batch and each alone; cosines: the worst; alone≠batch: "
        "max |Δ| of a mean-pooled unit vector alone vs batched; validated at cos mean ≥ "
        f"{MIN_MEAN_COSINE} and alone≠batch ≤ {MAX_BATCH_DELTA:.0e}):",
        header,
    ]
    for r in reports:
        if not r.ran:
            lines.append(f"{r.variant:<10} {r.note}")
            continue
        hidden = max(v for k, v in r.max_abs_error.items() if k.startswith("hidden_states."))
        lines.append(
            f"{r.variant:<10} {r.max_abs_error['last_hidden_state']:>12.2e} "
            f"{r.max_abs_error['pooler_output']:>13.2e} {hidden:>13.2e} "
            f"{r.cosine['cls']:>8.5f} {r.cosine['pooler']:>10.5f} {r.cosine['mean']:>9.5f} "
            f"{r.batch_invariance.get('max_abs', 0.0):>11.1e}  {r.verdict}"
        )
    return "\n".join(lines)


def _batches(
    tokenizer: PreTrainedTokenizerFast, data: LabelledTexts, max_length: int, size: int = 64
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(row indices, padded int64 inputs) in batches of similar length, cut at max_length."""
    encoded = tokenizer(data.texts, data.pairs, truncation=True, max_length=max_length)["input_ids"]
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        texts = [data.texts[i] for i in rows]
        pairs = [data.pairs[i] for i in rows] if data.pairs else None
        batch = tokenizer(
            texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="np"
        )
        yield rows, {name: batch[name].astype(np.int64) for name in INPUTS}


def torch_logits(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, data: LabelledTexts, max_length: int
) -> np.ndarray:
    """PyTorch's logits of every row: (rows, labels) float32."""
    logits = np.zeros((len(data.texts), model.config.num_labels), dtype=np.float32)
    with torch.no_grad():
        for rows, inputs in _batches(tokenizer, data, max_length):
            out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
            logits[rows] = out.logits.numpy()
    return logits


def onnx_logits(
    model_file: Path, tokenizer: PreTrainedTokenizerFast, data: LabelledTexts, max_length: int
) -> np.ndarray:
    """An exported classifier's logits of every row on the CPU: (rows, labels) float32."""
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    chunks = [
        (rows, session.run(["logits"], inputs)[0])
        for rows, inputs in _batches(tokenizer, data, max_length)
    ]
    logits = np.zeros((len(data.texts), chunks[0][1].shape[1]), dtype=np.float32)
    for rows, values in chunks:
        logits[rows] = values
    return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, computed in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def accuracy_and_macro_f1(truth: np.ndarray, predicted: np.ndarray, classes: int) -> dict:
    """Accuracy and the unweighted mean of the per-class F1 scores."""
    f1 = []
    for c in range(classes):
        tp = int(((predicted == c) & (truth == c)).sum())
        wrong = int(((predicted == c) != (truth == c)).sum())  # false positives + negatives
        f1.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
    return {"accuracy": float((truth == predicted).mean()), "macro_f1": float(np.mean(f1))}


def score_classifier(
    reference: np.ndarray, logits: np.ndarray, label_ids: list[int] | None
) -> dict:
    """A variant's labels and probabilities against PyTorch's (and the truth, when known)."""
    ours, theirs = logits.argmax(-1), reference.argmax(-1)
    report = {
        "rows": int(len(logits)),
        "label_agreement": float((ours == theirs).mean()),
        "max_abs_error_probability": float(np.abs(softmax(logits) - softmax(reference)).max()),
    }
    if label_ids is not None:
        truth, classes = np.asarray(label_ids), reference.shape[1]
        mine = accuracy_and_macro_f1(truth, ours, classes)
        pytorch = accuracy_and_macro_f1(truth, theirs, classes)
        report.update(
            mine,
            pytorch_accuracy=pytorch["accuracy"],
            pytorch_macro_f1=pytorch["macro_f1"],
            accuracy_change_points=100 * (mine["accuracy"] - pytorch["accuracy"]),
        )
    return report


def format_classification(reports: list[VariantReport]) -> str:
    """One line per variant: label agreement with PyTorch and, with labels, accuracy."""
    lines = []
    for r in reports:
        c = r.classification
        if not c:
            continue
        line = (
            f"{r.variant:<10} max|Δ| logits {r.max_abs_error['logits']:.2e}; labels agree with "
            f"PyTorch on {c['label_agreement']:.2%} of {c['rows']} rows, max |Δp| "
            f"{c['max_abs_error_probability']:.1e}"
        )
        if "accuracy" in c:
            line += (
                f"; accuracy {c['accuracy']:.4f} ({c['accuracy_change_points']:+.2f} points vs "
                f"PyTorch {c['pytorch_accuracy']:.4f}), macro-F1 {c['macro_f1']:.4f}"
            )
        lines.append(line)
    return "\n".join(lines)


def evaluation_summary(data: LabelledTexts, reports: list[VariantReport]) -> dict:
    """The manifest's record of how each variant scores on labelled ``data``."""
    keys = ("accuracy", "macro_f1", "label_agreement", "accuracy_change_points")
    scored = [r for r in reports if r.classification]
    summary: dict = {"data": data.name, "rows": len(data.texts)}
    if scored:
        first = scored[0].classification
        summary["pytorch"] = {
            "accuracy": first["pytorch_accuracy"],
            "macro_f1": first["pytorch_macro_f1"],
        }
    for r in scored:
        summary[r.variant] = {k: r.classification[k] for k in keys}
    return summary
