"""Exporting one checkpoint: every variant converted, validated against PyTorch, and
installed into the model repository only when all of them pass.

torch, transformers and optimum are imported when ``export_model`` runs, not before.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from bertserve.variants import DEFAULT_VARIANTS, PRECISION, VARIANTS

from .errors import ExportError, PackageExistsError, ValidationError

if TYPE_CHECKING:
    from .validate import LabelledTexts


class _Steps:
    """One line per long step, with its duration, on stderr."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        self.done += 1
        start = time.perf_counter()
        if self.enabled:
            print(f"[{self.done}/{self.total}] {what} ...", end="", file=sys.stderr, flush=True)
        yield
        if self.enabled:
            print(f" {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)


def _check_variants(variants: Sequence[str]) -> list[str]:
    chosen = list(dict.fromkeys(v.strip() for v in variants if v.strip()))
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise ExportError(
            f"unknown variant(s) {unknown or chosen}; choose from {', '.join(VARIANTS)}"
        )
    return chosen


def _writable_model_dir(repo: Path, name: str) -> Path:
    if not name or name.startswith(".") or "/" in name or name in ("..",):
        raise ExportError(f"invalid model name {name!r}: use letters, digits, '-', '_' or '.'")
    model_dir = repo / name
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=model_dir):
            pass
    except OSError as exc:
        raise ExportError(
            f"cannot write to the model repository {repo}: {exc.strerror or exc}"
        ) from None
    return model_dir


def _default_pooling(folder: Path) -> str:
    """How sentence-transformers checkpoints pool (1_Pooling/config.json); else CLS."""
    config = folder / "1_Pooling" / "config.json"
    if config.is_file():
        modes = json.loads(config.read_text())
        for mode, key in (
            ("mean", "pooling_mode_mean_tokens"),
            ("cls", "pooling_mode_cls_token"),
            ("max", "pooling_mode_max_tokens"),
        ):
            if modes.get(key):
                return mode
    return "cls"


def _install(staged: Path, target: Path) -> None:
    """Move a finished package into place; a package being replaced is removed only after."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_model(
    model: str | None = None,
    *,
    repo: Path,
    name: str | None = None,
    config: str | None = None,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    force: bool = False,
    progress: bool = True,
    evaluation: LabelledTexts | None = None,
    manifest_extra: dict | None = None,
) -> list[Path]:
    """Export `model` (a folder, 'minilm', a cached hub name) or a random `config` into
    `<repo>/<name>/<variant>/` for each variant; returns those folders.

    Every variant is validated against PyTorch before anything is moved into place:
    an fp32 or fp32-opt variant off by more than 1e-4 raises ValidationError and
    writes nothing. Raises ExportError (or a subclass) with a message for the user.

    A sequence-classification checkpoint (config.json's architectures) exports with its
    ``logits`` and labels; each variant's labels are scored against PyTorch's on
    ``evaluation`` (texts with true class ids: accuracy too), else on the validation
    sentences. ``manifest_extra``: more fields for every manifest (e.g. training facts).
    """
    from . import convert, optimize, validate
    from .manifest import write_manifest
    from .sources import resolve

    chosen = _check_variants(variants)
    source = resolve(model, config)
    name = name or source.default_name
    repo = Path(repo)
    model_dir = _writable_model_dir(repo, name)
    existing = [v for v in chosen if (model_dir / v).exists()]
    if existing and not force:
        raise PackageExistsError(
            f"{model_dir} already holds {', '.join(existing)}; pass --force to replace them"
        )

    labels = None if source.random_config else convert.classifier_labels(source.folder)
    needs_opt = bool({"fp32-opt", "int8"} & set(chosen))
    steps = _Steps(3 + needs_opt + ("int8" in chosen) + ("fp16" in chosen) + bool(labels), progress)
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=model_dir))
    staged: dict[str, Path] = {}
    try:
        with steps.step(f"loading {source.label}"):
            torch_model, pooler_trained = convert.load_model(source)
            tokenizer = convert.load_tokenizer(source)
        cfg = torch_model.config
        max_length = cfg.max_position_embeddings
        if 0 < getattr(tokenizer, "model_max_length", 0) < max_length:
            max_length = int(tokenizer.model_max_length)
        outputs = "logits and every hidden state" if labels else "every hidden state"
        with steps.step(f"exporting fp32 ONNX with {outputs} (optimum)"):
            fp32 = convert.export_fp32(torch_model, work / "fp32")
        files = {"fp32": fp32}
        notes: dict[str, dict] = {}
        if needs_opt:
            with steps.step("fusing attention, LayerNorm and GELU (fp32-opt)"):
                files["fp32-opt"] = work / "fp32-opt.onnx"
                notes["fp32-opt"] = {
                    "fused_operators": optimize.write_fp32_opt(
                        fp32, files["fp32-opt"], cfg.num_attention_heads, cfg.hidden_size
                    )
                }
        if "int8" in chosen:
            with steps.step("quantizing to int8 (MatMulNBits, activations per row)"):
                files["int8"] = work / "int8.onnx"
                quantization = optimize.write_int8(files["fp32-opt"], files["int8"])
                notes["int8"] = {"quantization": quantization}
        if "fp16" in chosen:
            with steps.step("converting to fp16 (fused, for CUDA)"):
                files["fp16"] = work / "fp16.onnx"
                optimize.write_fp16(fp32, files["fp16"], cfg.num_attention_heads, cfg.hidden_size)

        with steps.step(f"validating {', '.join(chosen)} against PyTorch"):
            inputs = validate.reference_inputs(tokenizer, min(cfg.max_position_embeddings, 512))
            reference = validate.reference_outputs(torch_model, inputs)
            reports = [validate.validate_variant(v, files[v], inputs, reference) for v in chosen]
        if labels:
            scored = evaluation or validate.LabelledTexts(list(validate.SENTENCES))
            with steps.step(f"scoring the classifier's labels on {len(scored.texts)} rows"):
                expected = validate.torch_logits(torch_model, tokenizer, scored, max_length)
                for report in reports:
                    if report.ran:
                        logits = validate.onnx_logits(
                            files[report.variant], tokenizer, scored, max_length
                        )
                        report.classification = validate.score_classifier(
                            expected, logits, scored.label_ids
                        )
        table = validate.format_table(name, reports)
        if labels:
            table += "\n" + validate.format_classification(reports)
        if progress:
            print(table, file=sys.stderr)
        failed = [r for r in reports if not r.passed]
        if failed:
            raise ValidationError(
                f"{', '.join(r.variant for r in failed)} disagrees with PyTorch:\n{table}"
            )

        lowercase = tokenizer.tokenize("Paris") == tokenizer.tokenize("paris")
        common = {
            "name": name,
            "architecture": "BertForSequenceClassification" if labels else "BertModel",
            "task": convert.CLASSIFICATION if labels else "feature-extraction",
            "model_type": "bert",
            "num_layers": cfg.num_hidden_layers,
            "hidden_size": cfg.hidden_size,
            "num_heads": cfg.num_attention_heads,
            "intermediate_size": cfg.intermediate_size,
            "max_position_embeddings": cfg.max_position_embeddings,
            "max_length": max_length,
            "vocab_size": cfg.vocab_size,
            "type_vocab_size": cfg.type_vocab_size,
            "lowercase": lowercase,
            "random_weights": source.random_config is not None,
            "source": source.label,
            # a random model borrows MiniLM's folder for its vocabulary, not its pooling
            "default_pooling": "cls" if source.random_config else _default_pooling(source.folder),
            "pooler_trained": pooler_trained,
            "opset": convert.OPSET,
            "inputs": list(convert.INPUTS),
            "outputs": convert.output_names(cfg.num_hidden_layers, classifier=bool(labels)),
            "labels": labels,
            **(
                {"evaluation": validate.evaluation_summary(evaluation, reports)}
                if labels and evaluation and evaluation.label_ids is not None
                else {}
            ),
            **(manifest_extra or {}),
        }
        for report in reports:
            variant = report.variant
            stage = model_dir / f".{variant}.tmp-{work.name}"
            stage.mkdir()
            staged[variant] = stage  # registered first, so an interruption cleans it up
            shutil.copyfile(files[variant], stage / "model.onnx")
            convert.save_tokenizer(tokenizer, stage)
            cfg.save_pretrained(stage)
            write_manifest(
                stage,
                {
                    **common,
                    "variant": variant,
                    "precision": PRECISION[variant],
                    "device": "cuda" if variant == "fp16" else "any",
                    "validation": report.as_dict(),
                    **notes.get(variant, {}),
                },
            )
        written = []
        for variant, stage in staged.items():
            _install(stage, model_dir / variant)
            written.append(model_dir / variant)
        return written
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for stage in staged.values():
            shutil.rmtree(stage, ignore_errors=True)
