"""Score a fine-tuned classifier as served: every test row over gRPC Classify, against PyTorch.

    python scripts/sentiment_eval.py --data DATA_DIR --target HOST:PORT --model NAME \
        --checkpoint REPO/.finetune/NAME/best [--variants fp32-opt,int8] [--out eval.json]

For each variant: accuracy and macro-F1 of the labels served by Classify (through the Python
client), the rows whose label differs from PyTorch's (the checkpoint run by transformers on
the same whole texts) and the largest probability difference; for int8 also its label
agreement with the first variant and the change in accuracy. Beside them, the TF-IDF (1-2
grams) + logistic regression baseline trained in the same run. Needs [export,train].
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from bertserve.bench.load import cpu_description
from bertserve.client import Client
from bertserve.export.validate import LabelledTexts, softmax, torch_logits
from bertserve.train.data import load_dataset
from bertserve.train.probe import tfidf_baseline, training_rows
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoTokenizer, BertForSequenceClassification


def served(client: Client, model: str, variant: str, texts: list[str]) -> tuple[list, np.ndarray]:
    """Labels and probabilities (in the model's label order) of every text over Classify."""
    labels, probabilities = [], []
    for start in range(0, len(texts), 64):
        result = client.classify(texts[start : start + 64], model=model, variant=variant)
        for item in result.results:
            labels.append(item.label)
            probabilities.append(item.scores)
    return labels, probabilities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--variants", default="fp32-opt,int8")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    data = load_dataset(args.data)
    test = data.test
    report: dict = {"cpu": cpu_description(), "test_rows": len(test), "variants": {}}

    started = time.perf_counter()
    accuracy, f1 = tfidf_baseline(training_rows(data), test, seed=0)
    report["tfidf"] = {"accuracy": accuracy, "macro_f1": f1}
    report["tfidf_seconds"] = round(time.perf_counter() - started, 1)

    model = BertForSequenceClassification.from_pretrained(args.checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    limit = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    with torch.no_grad():
        reference = softmax(torch_logits(model, tokenizer, LabelledTexts(test.texts), limit))
    pytorch_labels = [names[i] for i in reference.argmax(-1)]
    report["pytorch"] = {
        "accuracy": accuracy_score(test.labels, pytorch_labels),
        "macro_f1": f1_score(test.labels, pytorch_labels, average="macro"),
    }
    first: list[str] | None = None
    with Client(args.target, timeout=300) as client:
        for variant in args.variants.split(","):
            started = time.perf_counter()
            labels, scores = served(client, args.model, variant, test.texts)
            seconds = time.perf_counter() - started
            probabilities = np.array([[s[name] for name in names] for s in scores])
            entry = {
                "accuracy": accuracy_score(test.labels, labels),
                "macro_f1": f1_score(test.labels, labels, average="macro"),
                "rows_differing_from_pytorch": int(
                    sum(a != b for a, b in zip(labels, pytorch_labels, strict=True))
                ),
                "max_abs_probability_difference": float(np.abs(probabilities - reference).max()),
                "classify_seconds": round(seconds, 1),
            }
            if first is not None:
                entry["label_agreement_with_" + args.variants.split(",")[0]] = float(
                    np.mean([a == b for a, b in zip(labels, first, strict=True)])
                )
                entry["accuracy_change_points"] = 100 * (
                    entry["accuracy"] - report["variants"][args.variants.split(",")[0]]["accuracy"]
                )
            else:
                first = labels
            report["variants"][variant] = entry
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
