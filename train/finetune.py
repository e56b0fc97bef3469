"""`bertserve finetune`: fine-tune a BERT checkpoint for text classification with PyTorch, then
export it through the same path as base models (needs the [export] and [train] extras).

The recipe is the standard one: AdamW, linear warm-up then decay, early stopping on the
validation macro-F1. Batches are grouped by length (tweets are short: padding is time) and
training inputs are cut at ``max_length``; evaluation and serving see whole texts.
Everything is deterministic under ``seed``: the data order of epoch e comes from (seed, e),
the head's initialisation and dropout from torch's generator, whose state is checkpointed.

The work folder holds a checkpoint after each epoch (``epoch-N/``, a Hugging Face model folder)
and ``state.pt`` (train/checkpoint.py). Ctrl-C or SIGTERM stops after the current step and
saves the state; running the same command again resumes there.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from bertserve.export import PackageExistsError, export_model
from bertserve.export.convert import load_tokenizer, random_config
from bertserve.export.sources import Source, check_is_bert, resolve
from bertserve.export.validate import LabelledTexts, accuracy_and_macro_f1, softmax, torch_logits
from bertserve.variants import DEFAULT_VARIANTS
from transformers import BertForSequenceClassification, PreTrainedTokenizerFast

from .checkpoint import (
    BEST,
    Interrupted,
    Progress,
    keep_checkpoints,
    load_state,
    prepare_work,
    promote_best,
    run_identity,
    save_state,
    stop_on_signal,
)
from .data import Dataset, Split
from .settings import Settings


def load_base(
    source: Source, labels: list[str], seed: int
) -> tuple[BertForSequenceClassification, PreTrainedTokenizerFast]:
    """The base model with a new classification head (initialised under ``seed``) and its
    tokenizer; a random config borrows MiniLM's vocabulary."""
    id2label = dict(enumerate(labels))
    label2id = {label: i for i, label in id2label.items()}
    torch.manual_seed(seed)
    if source.random_config:
        config = random_config(source, num_labels=len(labels), id2label=id2label, label2id=label2id)
        model = BertForSequenceClassification(config)
    else:
        check_is_bert(source.folder)
        import transformers

        transformers.logging.set_verbosity_error()  # "newly initialized: classifier" is the point
        model = BertForSequenceClassification.from_pretrained(
            source.folder,
            num_labels=len(labels),
            id2label=id2label,
            label2id=label2id,
            ignore_mismatched_sizes=True,  # a checkpoint with another head gets a new one
        )
    return model, load_tokenizer(source)


def epoch_batches(lengths: np.ndarray, settings: Settings, epoch: int) -> list[np.ndarray]:
    """Row indices of each batch of ``epoch``: shuffled under (seed, epoch); with length grouping
    sorted by length inside windows of 50 batches, then the batches shuffled."""
    rng = np.random.default_rng([settings.seed, epoch])
    order = rng.permutation(len(lengths))
    size = settings.batch_size
    if settings.group_by_length:
        window = 50 * size
        order = np.concatenate(
            [
                chunk[np.argsort(-lengths[chunk], kind="stable")]
                for chunk in np.array_split(order, max(1, -(-len(order) // window)))
            ]
        )
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    if settings.group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def collate(
    encoded: dict[str, list[list[int]]], rows: np.ndarray, labels: np.ndarray, pad_id: int
) -> dict[str, torch.Tensor]:
    """A padded batch: (batch, longest) int64 inputs and (batch,) labels."""
    longest = max(len(encoded["input_ids"][i]) for i in rows)
    batch = {name: np.zeros((len(rows), longest), dtype=np.int64) for name in encoded}
    batch["input_ids"].fill(pad_id)
    for row, i in enumerate(rows):
        for name, values in encoded.items():
            batch[name][row, : len(values[i])] = values[i]
    tensors = {name: torch.from_numpy(array) for name, array in batch.items()}
    tensors["labels"] = torch.from_numpy(labels[rows])
    return tensors


def evaluate(
    model: BertForSequenceClassification,
    tokenizer: PreTrainedTokenizerFast,
    split: Split,
    label_ids: list[int],
    max_length: int,
) -> dict[str, float]:
    """Loss, accuracy and macro-F1 on whole texts (cut only at the model's limit)."""
    model.eval()
    logits = torch_logits(model, tokenizer, LabelledTexts(split.texts, split.pairs), max_length)
    truth = np.asarray(label_ids)
    probabilities = softmax(logits)
    loss = float(-np.log(probabilities[np.arange(len(truth)), truth] + 1e-12).mean())
    return {"loss": loss, **accuracy_and_macro_f1(truth, logits.argmax(-1), logits.shape[1])}


def _log_epoch(epoch: int, train_loss: float | None, scores: dict[str, float]) -> None:
    trained = f"train loss {train_loss:.4f}; " if train_loss is not None else "untrained head: "
    print(
        f"epoch {epoch}: {trained}validation loss {scores['loss']:.4f}, accuracy "
        f"{scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f}",
        file=sys.stderr,
        flush=True,
    )


def train(
    model: BertForSequenceClassification,
    tokenizer: PreTrainedTokenizerFast,
    dataset: Dataset,
    settings: Settings,
    work: Path,
    progress_bar: bool = True,
) -> Progress:
    """Train (or resume) in ``work``; returns the progress with each epoch's history.

    Raises Interrupted after saving the state when a signal asked to stop.
    """
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    train_labels = np.asarray(dataset.train.label_ids(dataset.label_names), dtype=np.int64)
    validation_labels = dataset.validation.label_ids(dataset.label_names)
    encoded = tokenizer(
        dataset.train.texts,
        dataset.train.pairs,
        truncation=True,
        max_length=settings.max_length,
        return_attention_mask=True,
        return_token_type_ids=True,
    )
    encoded = {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    lengths = np.asarray([len(ids) for ids in encoded["input_ids"]])
    limit = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    steps_per_epoch = -(-len(lengths) // settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
            "weight_decay": settings.weight_decay,
        },
        {
            "params": [p for n, p in model.named_parameters() if n.endswith(no_decay)],
            "weight_decay": 0.0,
        },
    ]
    optimizer = torch.optim.AdamW(groups, lr=settings.lr)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(settings.warmup * total_steps), total_steps
    )
    progress = load_state(work, model, optimizer, scheduler)
    if not progress.history:  # the untrained head, so the history shows what training bought
        scores = evaluate(model, tokenizer, dataset.validation, validation_labels, limit)
        progress.history = [{"epoch": 0, "validation": {k: round(v, 5) for k, v in scores.items()}}]
        _log_epoch(0, None, scores)
    with stop_on_signal() as flag:
        while not progress.finished:
            epoch = progress.epoch
            batches = epoch_batches(lengths, settings, epoch)
            model.train()
            bar = tqdm(
                total=len(batches),
                initial=progress.step,
                desc=f"epoch {epoch + 1}/{settings.epochs}",
                unit="batch",
                disable=not progress_bar,
                file=sys.stderr,
                mininterval=1.0,
            )
            running, started, rows, losses = None, time.perf_counter(), 0, []
            for rows_of_batch in batches[progress.step :]:
                batch = collate(encoded, rows_of_batch, train_labels, tokenizer.pad_token_id or 0)
                loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                progress.step += 1
                rows += len(rows_of_batch)
                value = float(loss.detach())
                losses.append(value)
                running = value if running is None else 0.98 * running + 0.02 * value
                bar.update(1)
                bar.set_postfix(  # shown at the bar's own pace (mininterval)
                    loss=f"{running:.4f}",
                    rows_s=f"{rows / (time.perf_counter() - started):.1f}",
                    refresh=False,
                )
                if flag["stop"]:
                    break
            bar.close()
            progress.seconds += time.perf_counter() - started
            progress.rows += rows
            if flag["stop"] and progress.step < len(batches):
                save_state(work, model, optimizer, scheduler, progress)
                raise Interrupted(
                    f"stopped in epoch {epoch + 1} after batch {progress.step}; the state is in "
                    f"{work}: run the same command again to resume"
                )
            scores = evaluate(model, tokenizer, dataset.validation, validation_labels, limit)
            progress.epoch, progress.step = epoch + 1, 0
            window = max(1, min(10, len(losses) // 4))
            entry = {
                "epoch": epoch + 1,
                # mean batch loss at the start and the end of the epoch (of this sitting)
                "train_loss_first": round(float(np.mean(losses[:window] or [0.0])), 5),
                "train_loss_last": round(float(np.mean(losses[-window:] or [0.0])), 5),
                "validation": {k: round(v, 5) for k, v in scores.items()},
                "seconds": round(progress.seconds, 1),
            }
            progress.history = [*(progress.history or []), entry]
            _log_epoch(epoch + 1, entry["train_loss_last"], scores)
            checkpoint = work / f"epoch-{epoch + 1}"
            model.save_pretrained(checkpoint)
            tokenizer.save_pretrained(checkpoint)
            if scores["macro_f1"] > progress.best_f1:
                progress.best_epoch, progress.best_f1, progress.stale = (
                    epoch + 1,
                    scores["macro_f1"],
                    0,
                )
            else:
                progress.stale += 1
            keep_checkpoints(work, checkpoint, progress.best_epoch)
            if progress.epoch >= settings.epochs or progress.stale >= settings.patience:
                progress.finished = True
            save_state(work, model, optimizer, scheduler, progress)
            if flag["stop"] and not progress.finished:
                raise Interrupted(
                    f"stopped after epoch {epoch + 1}; the state is in {work}: run the same "
                    "command again to resume"
                )
    promote_best(work, progress.best_epoch)
    return progress


def finetune(
    model: str | None,
    *,
    data: Dataset,
    repo: Path,
    name: str | None = None,
    config: str | None = None,
    settings: Settings = Settings(),
    variants: list[str] | None = None,
    work: Path | None = None,
    restart: bool = False,
    force: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Fine-tune ``model`` (as for export: a folder, 'minilm', or a random ``config``) on
    ``data``, then export the best epoch to ``<repo>/<name>/<variant>/``; returns those folders.
    """
    from bertserve.bench.load import cpu_description

    settings.check()
    source = resolve(model, config)
    name = name or f"{source.default_name}-{Path(data.source).stem}"
    repo = Path(repo)
    variants = variants or list(DEFAULT_VARIANTS)
    existing = [v for v in variants if (repo / name / v).exists()]
    if existing and not force:  # said before training, not after
        raise PackageExistsError(
            f"{repo / name} already holds {', '.join(existing)}; pass --force to replace them"
        )
    work = Path(work) if work else repo / ".finetune" / name
    prepare_work(work, run_identity(source, data, settings), restart)
    torch_model, tokenizer = load_base(source, data.label_names, settings.seed)
    if progress:
        print(
            f"fine-tuning {source.label} on {len(data.train)} rows ({len(data.validation)} "
            f"validation, {len(data.test)} test; labels {', '.join(data.label_names)}) with "
            f"{json.dumps(asdict(settings))}; {torch.get_num_threads()} threads, "
            f"{cpu_description()}; work folder {work}",
            file=sys.stderr,
        )
    run = train(torch_model, tokenizer, data, settings, work, progress)
    test = LabelledTexts(
        data.test.texts, data.test.pairs, data.test.label_ids(data.label_names), name="test"
    )
    training = {
        "base_model": source.label,
        "random_weights": source.random_config is not None,
        **asdict(settings),
        "optimizer": "AdamW",
        "schedule": "linear warm-up and decay",
        "early_stopping": "validation macro-F1",
        "epochs_run": run.epoch,
        "best_epoch": run.best_epoch,
        "train_rows": len(data.train),
        "validation_rows": len(data.validation),
        "train_seconds": round(run.seconds, 1),
        "rows_per_second": round(run.rows / max(run.seconds, 1e-9), 2),
        "history": run.history,
        "threads": torch.get_num_threads(),
        "cpu": cpu_description(),
    }
    return export_model(
        str(work / BEST),
        repo=repo,
        name=name,
        variants=variants,
        force=True,
        progress=progress,
        evaluation=test,
        manifest_extra={
            "training": training,
            "data": data.summary(),
            # fine-tuned from random weights on a little data: numbers, not meaning
            **({"random_weights": True} if source.random_config else {}),
        },
    )
