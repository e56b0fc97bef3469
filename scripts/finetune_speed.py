"""Training throughput of MiniLM under batching choices, to pick `bertserve finetune`'s defaults.

    python scripts/finetune_speed.py DATA_DIR [--rows 1536]

Times the same fine-tuning steps (forward, backward, AdamW) on the first ROWS training rows of
each epoch order, for: unsorted batches cut at 128 tokens (the plain loop), length-grouped at
128, and length-grouped at 64 with batch sizes 16, 32 and 64. Prints rows/s and padded tokens.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bertserve.bench.load import cpu_description
from bertserve.export.sources import resolve
from bertserve.train.data import load_dataset
from bertserve.train.finetune import collate, epoch_batches, load_base
from bertserve.train.settings import Settings

CASES = [
    ("plain: unsorted, max_length 128, batch 32", Settings(max_length=128, group_by_length=False)),
    ("grouped, max_length 128, batch 32", Settings(max_length=128)),
    ("grouped, max_length 64, batch 16", Settings(max_length=64, batch_size=16)),
    ("grouped, max_length 64, batch 32", Settings(max_length=64, batch_size=32)),
    ("grouped, max_length 64, batch 64", Settings(max_length=64, batch_size=64)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--rows", type=int, default=1536)
    args = parser.parse_args()
    data = load_dataset(args.data)
    labels = np.asarray(data.train.label_ids(data.label_names), dtype=np.int64)
    print(cpu_description(), f"torch threads {torch.get_num_threads()}")
    print("| batching | rows/s | padded tokens per row |")
    print("| --- | --- | --- |")
    for title, settings in CASES:
        model, tokenizer = load_base(resolve("minilm", None), data.label_names, 0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
        encoded = dict(
            tokenizer(
                data.train.texts,
                truncation=True,
                max_length=settings.max_length,
                return_token_type_ids=True,
            )
        )
        lengths = np.asarray([len(ids) for ids in encoded["input_ids"]])
        batches = epoch_batches(lengths, settings, 0)[: args.rows // settings.batch_size]
        model.train()
        padded = rows = 0
        started = time.perf_counter()
        for index, batch_rows in enumerate(batches):
            if index == 2:  # the first steps allocate; time from the third
                started, padded, rows = time.perf_counter(), 0, 0
            batch = collate(encoded, batch_rows, labels, tokenizer.pad_token_id)
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            padded += batch["input_ids"].numel()
            rows += len(batch_rows)
        seconds = time.perf_counter() - started
        print(f"| {title} | {rows / seconds:.1f} | {padded / rows:.1f} |", flush=True)


if __name__ == "__main__":
    main()
