"""The models a server serves: each variant's tokenizer, onnxruntime sessions and batcher."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from bertserve.server.batcher import Batcher, CostModel
from bertserve.server.config import ServerConfig
from bertserve.server.defaults import choose_default, classify_model, no_default
from bertserve.server.errors import FailedPrecondition, InvalidArgument, ModelNotFound
from bertserve.server.features import FeatureSpec, pack, sequence_features
from bertserve.server.metrics import ModelMetrics
from bertserve.server.repository import (
    ModelPackage,
    VariantPackage,
    check_boundary,
    max_length_of,
    scan_repository,
    scrub,
    verify_package,
)
from bertserve.server.runtime import ModelRuntime
from bertserve.server.tokenize import ADVICE, Sequence, TextTokenizer

log = logging.getLogger(__name__)

# Batches timed at warm-up to fit each variant's cost model (cut to the model's limit): short
# and long, single and batched, so the fixed, per-token and attention costs all show.
COST_SHAPES = ((1, 8), (1, 64), (8, 16), (8, 64), (2, 256))
# What an int8 export's validation must show to count as validated (export/validate.py
# writes both into the manifest): the worst mean-pooled cosine to PyTorch over the hard
# texts, and the largest change of a mean-pooled unit vector between a text alone and the
# same text inside a batch of long texts. int8 is never the default by speed: a default
# chosen by a stopwatch changes between restarts, and indexed vectors with it.
INT8_MIN_COSINE = 0.995
INT8_MAX_BATCH_DELTA = 1e-3


@dataclass
class EmbedResult:
    """Packed outputs of one request and where its time went."""

    outputs: dict[
        str, np.ndarray
    ]  # token-level (total_tokens, width), sentence (sequences, width) float32
    lengths: list[int]
    truncated: list[int]
    queue_ns: int
    inference_ns: int
    tokens: int
    computed_tokens: int


class LoadedVariant:
    """One variant in memory: tokenizer, sessions and a batcher of its own."""

    def __init__(self, model: ModelPackage, package: VariantPackage, config: ServerConfig) -> None:
        self.model = model
        self.package = package
        manifest = package.manifest
        self.num_layers = int(manifest["num_layers"])
        self.hidden_size = int(manifest["hidden_size"])
        self.max_length = max_length_of(manifest)
        self.vocab_size = int(manifest["vocab_size"])
        self.type_vocab_size = int(manifest.get("type_vocab_size") or 2)
        self.tokenizer = TextTokenizer(package.path / "tokenizer.json", self.max_length)
        self.runtime = ModelRuntime(
            package.path / "model.onnx",
            config.device,
            config.intra_op_threads,
            config.instances,
            config.spin_wait,
        )
        missing = [
            name
            for name in ["last_hidden_state", "pooler_output"]
            + [f"hidden_states.{i}" for i in range(self.num_layers + 1)]
            if name not in self.runtime.output_names
        ]
        if missing:
            raise ValueError(f"model.onnx lacks the outputs {missing}")
        self.label = f"{model.name}/{package.name}"
        self.cost_samples: list[tuple[int, int, float]] = []
        self.batcher = Batcher(
            self._run_batch,
            config.batch_settings(model.name),
            workers=config.instances,
            name=self.label,
            observer=ModelMetrics(self.label),
        )

    def warm_up(self) -> None:
        """First runs, then the batcher's cost model measured on this device."""
        self.runtime.warm_up()
        shapes = [(size, min(length, self.max_length)) for size, length in COST_SHAPES]
        self.cost_samples = self.runtime.time_batches(shapes)
        self.batcher.cost = CostModel.fit(self.cost_samples)
        log.info(
            "measured the batch cost",
            extra={"model": self.label, "cost": self.batcher.cost.describe()},
        )

    # -- inputs -----------------------------------------------------------------------------

    def tokenize(
        self, texts: list[str], pairs: list[str] | None, truncate: bool, advice: str = ADVICE
    ) -> list[Sequence]:
        return self.tokenizer.sequences(texts, pairs, truncate=truncate, advice=advice)

    # -- features ---------------------------------------------------------------------------

    async def embed(
        self, sequences: list[Sequence], spec: FeatureSpec, timeout: float | None
    ) -> EmbedResult:
        """Features of already tokenized sequences, batched with every other caller's."""
        batched = await self.batcher.submit(
            [(sequence, spec) for sequence in sequences], [len(s) for s in sequences], timeout
        )
        return EmbedResult(
            outputs=pack(batched.results),
            lengths=[len(s) for s in sequences],
            truncated=[s.truncated for s in sequences],
            queue_ns=batched.queue_ns,
            inference_ns=batched.inference_ns,
            tokens=sum(len(s) for s in sequences),
            computed_tokens=batched.computed_tokens,
        )

    def _run_batch(
        self, payloads: list[tuple[Sequence, FeatureSpec]]
    ) -> list[dict[str, np.ndarray]]:
        """Pad, run once with the union of wanted outputs, and cut each sequence's features."""
        longest = max(len(sequence) for sequence, _ in payloads)
        shape = (len(payloads), longest)
        input_ids = np.full(shape, self.tokenizer.pad_id, dtype=np.int64)
        attention_mask = np.zeros(shape, dtype=np.int64)
        token_type_ids = np.zeros(shape, dtype=np.int64)
        wanted: set[str] = set()
        for row, (sequence, spec) in enumerate(payloads):
            n = len(sequence)
            input_ids[row, :n] = sequence.input_ids
            attention_mask[row, :n] = sequence.attention_mask
            token_type_ids[row, :n] = sequence.token_type_ids
            wanted |= spec.model_outputs()
        outputs = self.runtime.run(input_ids, attention_mask, token_type_ids, sorted(wanted))
        return [
            sequence_features(outputs, spec, row, sequence.attention_mask)
            for row, (sequence, spec) in enumerate(payloads)
        ]


def int8_validated(manifest: dict[str, Any]) -> tuple[bool, str]:
    """Whether an int8 package's export validation meets both thresholds, and why.

    Validated means a worst mean-pooled cosine to PyTorch of at least ``INT8_MIN_COSINE``
    and vectors that move by at most ``INT8_MAX_BATCH_DELTA`` between a text alone and
    batched; a package exported before the batch check existed is not validated.
    """
    validation = manifest.get("validation") or {}
    cosine = (validation.get("cosine") or {}).get("mean")
    delta = (validation.get("batch_invariance") or {}).get("max_abs")
    if not validation.get("ran") or cosine is None:
        return False, "has no validation record"
    if delta is None:
        return False, (
            f"has no batch-invariance record (worst mean-pooled cosine {cosine:.4f} to "
            "PyTorch; re-export it to measure a text alone against batched)"
        )
    facts = (
        f"worst mean-pooled cosine {cosine:.4f} to PyTorch, min {INT8_MIN_COSINE}; a text alone "
        f"and batched differ by up to {delta:.1e}, max {INT8_MAX_BATCH_DELTA:.0e}"
    )
    if not validation.get("passed") or cosine < INT8_MIN_COSINE or delta > INT8_MAX_BATCH_DELTA:
        return False, f"failed validation ({facts})"
    return True, f"passed validation ({facts})"


class ModelRegistry:
    """Every model of the repository; default variants load at start, others on first use.

    A package that is damaged (checksums, unreadable manifest) or fails to load is refused
    with a clear message (FAILED_PRECONDITION to its callers) while the others serve. Callers
    may load only ``allowed_variants``, and at most ``max_loaded_variants`` in all.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        # (model, variant) -> why it cannot be served
        self.failed: dict[tuple[str, str], str] = {}
        self.models: dict[str, ModelPackage] = scan_repository(config.repo, self.failed)
        if not self.models:
            raise ValueError(
                f"model repository {config.repo} holds no model (<model>/<variant>/manifest.json)"
                + "".join(f"; {why}" for why in self.failed.values())
            )
        unknown = sorted(set(config.variants) - set(self.models))
        if unknown:
            raise ValueError(
                f"variants: model {unknown[0]!r} is not in {config.repo}; "
                f"it holds {sorted(self.models)}"
            )
        # None: several models and none marked, so a request must name one
        self.default_model: str | None = choose_default(
            self.models,
            config.default_model,
            refused=(model for model, _ in self.failed),
            where=str(config.repo),
        )
        self.default_variants: dict[str, str] = {}
        allowed = config.allowed_variants
        self.default_reasons: dict[str, str] = {}
        for name, model in self.models.items():
            variant = config.variants.get(name) or model.default_variant(config.device)
            if allowed and variant not in allowed and not config.variants.get(name):
                variant = next((v for v in model.variants if v in allowed), variant)
            if variant not in model.variants:
                raise ValueError(
                    f"variant {variant!r} of model {name!r} is not in {config.repo}; "
                    f"it has {sorted(model.variants)}"
                )
            if allowed and variant not in allowed:
                raise ValueError(
                    f"model {name!r} has none of the allowed variants {list(allowed)}; "
                    f"it has {list(model.variants)}"
                )
            self.default_variants[name] = variant
            self.default_reasons[name] = (
                f"configured (variants.{name}: {variant})"
                if name in config.variants
                else self._default_reason(model, variant)
            )
        self.loaded: dict[tuple[str, str], LoadedVariant] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # variants being loaded on demand: counted against max_loaded_variants with the loaded
        self._loading: set[tuple[str, str]] = set()

    def _default_reason(self, model: ModelPackage, variant: str) -> str:
        """Why an unconfigured model serves ``variant``: the device's default, never a timing."""
        device = "CUDA" if self.config.device == "cuda" else "CPU"
        reason = f"{variant}: the {device} default"
        if variant != model.default_variant(self.config.device):
            reason = f"{variant}: the first of the allowed variants (allowed_variants)"
        if "int8" in model.variants and variant != "int8":
            _, why = int8_validated(model.variants["int8"].manifest)
            reason += (
                f"; int8 serves only when configured (--variant, variants:, per request): {why}"
            )
        return reason

    def _load(self, name: str, variant: str) -> LoadedVariant:
        started = time.monotonic()
        package = self.models[name].variants[variant]
        if self.config.verify_checksums:
            verify_package(package)  # the boundary too
        else:
            check_boundary(package)
        loaded = LoadedVariant(self.models[name], package, self.config)
        if self.config.warmup:
            loaded.warm_up()
        self.loaded[(name, variant)] = loaded
        log.info(
            "loaded model",
            extra={
                "model": name,
                "variant": variant,
                "provider": loaded.runtime.provider,
                "threads": loaded.runtime.intra_op_threads,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        return loaded

    def _refuse(self, name: str, variant: str, error: Exception) -> str:
        reason = scrub(
            f"variant {variant!r} of model {name!r} was refused at load: {error}", self.config.repo
        )
        self.failed[(name, variant)] = reason
        log.error("model refused", extra={"model": name, "variant": variant, "reason": reason})
        return reason

    def load_defaults(self) -> None:
        """Load and warm up each model's default variant (blocking; called before serving).

        A model whose package is damaged or fails to load is refused and logged, and the others
        serve; only when none loads is it an error. Only the default variants load here: the
        warm-up timings fit each batcher's cost model and never change which variant answers.
        """
        for name, variant in self.default_variants.items():
            try:
                self._load(name, variant)
            except Exception as error:
                self.default_reasons[name] = self._refuse(name, variant, error)
        if not self.loaded:
            raise ValueError("no model could be loaded: " + "; ".join(self.failed.values()))

    def model(self, name: str) -> ModelPackage:
        """The package of model ``name`` ("" = the default); NOT_FOUND if unknown,
        FAILED_PRECONDITION for "" on a server without a default model."""
        if not name:
            if self.default_model is None:
                # the ones that can answer: a model refused at load is no help to the caller
                working = [
                    m for m in self.models if (m, self.default_variants[m]) not in self.failed
                ]
                raise no_default(working or self.models)
            name = self.default_model
        refused = [why for (model, _), why in self.failed.items() if model == name]
        if name not in self.models and refused:
            raise FailedPrecondition(refused[0])
        if name not in self.models:
            raise ModelNotFound(f"model {name!r} not found; this server has {sorted(self.models)}")
        return self.models[name]

    async def variant(self, model_name: str, variant_name: str = "") -> LoadedVariant:
        """The loaded variant (loading it on first use, off the event loop)."""
        model = self.model(model_name)
        variant_name = variant_name or self.default_variants[model.name]
        key = (model.name, variant_name)
        if key in self.loaded:
            return self.loaded[key]
        if key in self.failed:
            raise FailedPrecondition(self.failed[key])
        if variant_name not in model.variants:
            raise InvalidArgument(
                f"variant={variant_name!r}: model {model.name!r} has no such variant; "
                f"allowed {self.servable_variants(model)}"
            )
        if self.config.allowed_variants and variant_name not in self.config.allowed_variants:
            raise InvalidArgument(
                f"variant={variant_name!r}: not served by this server (allowed_variants); "
                f"allowed {self.servable_variants(model)}"
            )
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self.loaded:
                # checked and reserved with no await between: concurrent first requests for
                # different variants see each other's reservation, so the bound holds
                holders = self.loaded.keys() | self._loading
                held = len(holders)
                if held >= self.config.max_loaded_variants:
                    names = sorted("/".join(k) for k in holders)
                    raise FailedPrecondition(
                        f"variant {variant_name!r} of model {model.name!r} is not loaded and "
                        f"{held} variants already are (or are loading), this server's limit "
                        f"(max_loaded_variants); loaded: {names}"
                    )
                self._loading.add(key)
                try:
                    await asyncio.to_thread(self._load, model.name, variant_name)
                except Exception as error:
                    reason = (
                        f"variant {variant_name!r} of model {model.name!r} failed to load: {error}"
                    )
                    raise FailedPrecondition(scrub(reason, self.config.repo)) from error
                finally:
                    self._loading.discard(key)
        return self.loaded[key]

    def servable_variants(self, model: ModelPackage) -> list[str]:
        """The variants of ``model`` callers may ask for (allowed_variants)."""
        allowed = self.config.allowed_variants
        return [v for v in model.variants if not allowed or v in allowed]

    def provider(self, model: str, variant: str) -> str:
        loaded = self.loaded.get((model, variant))
        return loaded.runtime.provider if loaded else ""

    async def close(self, timeout: float | None = None) -> None:
        await asyncio.gather(*(v.batcher.close(timeout) for v in self.loaded.values()))

    def labels(self, model: str) -> Any:
        return self.models[model].manifest.get("labels")

    def classifier(self, name: str) -> ModelPackage:
        """The model Classify uses: ``name``, or for "" the default-model rule's classifier."""
        if not name:
            labelled = {m: bool(self.labels(m)) for m in self.models}
            name = classify_model(self.default_model, labelled)
        return self.model(name)
