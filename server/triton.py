"""What the Open Inference Protocol (Triton's model APIs) says about bertserve's models, built
from plain facts: the repository's manifests, the batcher's settings, the statistics.

**Two v2 models per repository model.** Load testers (Triton's perf_analyzer, Model Analyzer)
send every input a model declares and ask for every output it lists, so a model's declared
inputs and outputs must be those of the request users typically send:

- ``MODEL`` (e.g. ``minilm``): input ``TEXT`` (BYTES [batch, 1]), output ``sentence_embedding``
  (FP32 [batch, hidden]); for a classifier ``label`` (BYTES [batch]) and ``probabilities``.
- ``MODEL.features`` (e.g. ``minilm.features``): every input (``TEXT`` with ``TEXT_PAIR``, or
  token ids ``input_ids`` with ``attention_mask`` and ``token_type_ids``, all optional: a
  request sends either group, with ``SPANS`` for late chunking) and every output
  (``token_embeddings``, ``hidden_states``, ``hidden_states.N``, ``lengths``, the sentence
  embedding, the long-document outputs ``chunk_embeddings`` ..., a classifier's ``logits`` ...).

Both share the repository model's variants (their versions), loaded variant and batcher;
ModelMetadata, ModelConfig and ModelInfer answer each name with the same inputs and outputs.
**Versions** are the variants' names (``fp32``, ``fp32-opt``, ``int8``, ...) or, as Triton
numbers its versions, their numbers (:func:`version_numbers`: fp32 1, fp32-opt 2, int8 3,
fp16 4, others from 5 by name). ModelStatistics answers with the numbers: Triton's
perf_analyzer reads a statistics version as an integer.

A dot is allowed in Triton's model names (a repository folder name) and in KServe's v2 paths
(``/v2/models/minilm.features``); bertserve's own model folders cannot clash with the suffix
(:func:`resolve` prefers a repository model of the exact name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import model_config_pb2 as mc
from bertserve.server.config import BatchSettings, ServerConfig
from bertserve.server.core.chunking import chunk_defaults
from bertserve.server.errors import InvalidArgument
from bertserve.server.repository import VARIANT_ORDER, ModelPackage, max_length_of
from bertserve.server.statistics import RequestStatistics, Statistics

FEATURES = ".features"
PLATFORM = "onnxruntime_onnx"  # Triton's name for an ONNX model run by onnxruntime
# What ServerMetadata.extensions claims, in Triton's names: request parameters, ModelConfig,
# ModelStatistics. Not "model_repository": RepositoryIndex is answered, load/unload are not.
EXTENSIONS = ("parameters", "model_configuration", "statistics")
# Request parameters that only tune Triton's own behaviour, which Triton's tools send with
# every request: accepted and ignored. Any other unknown parameter is INVALID_ARGUMENT.
IGNORED_PARAMETERS = (
    # perf_analyzer, on every ModelInfer/ModelStreamInfer: whether a decoupled model sends an
    # empty final response; bertserve models are not decoupled (one response per request)
    "triton_enable_empty_final_response",
)
TEXT_INPUTS = ("TEXT", "TEXT_PAIR")
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Late chunking: [spans, 3] rows [text, start, end) (INT32 or INT64; declared INT64)
SPANS = "SPANS"
# Long documents (parameters long_text=chunk, SPANS or split): their first dimension counts
# chunks or spans, not the batch.
LONG_TEXT_OUTPUTS = ("chunk_embeddings", "chunk_spans", "span_embeddings", "span_offsets")
DATA_TYPES = {
    "BYTES": mc.TYPE_STRING,
    "INT32": mc.TYPE_INT32,
    "INT64": mc.TYPE_INT64,
    "FP32": mc.TYPE_FP32,
}


@dataclass(frozen=True)
class Tensor:
    """One input or output: its shape starts with the batch dimension (-1)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class V2Model:
    """One v2 model name: a repository model seen whole (``features``) or as its typical
    request."""

    name: str
    package: ModelPackage
    features: bool

    @property
    def model(self) -> str:
        """The repository model's name."""
        return self.package.name

    @property
    def labels(self) -> list[str] | None:
        return self.package.manifest.get("labels")

    @property
    def inputs(self) -> dict[str, Tensor]:
        if not self.features:
            return {"TEXT": Tensor("TEXT", "BYTES", (-1, 1))}
        return {
            **{name: Tensor(name, "BYTES", (-1, 1), optional=True) for name in TEXT_INPUTS},
            **{name: Tensor(name, "INT64", (-1, -1), optional=True) for name in TOKEN_INPUTS},
            SPANS: Tensor(SPANS, "INT64", (-1, 3), optional=True),
        }

    @property
    def outputs(self) -> dict[str, Tensor]:
        manifest = self.package.manifest
        hidden, top = int(manifest["hidden_size"]), int(manifest["num_layers"])
        labels = self.labels
        if not self.features:
            if labels:
                return {
                    "label": Tensor("label", "BYTES", (-1,)),
                    "probabilities": Tensor("probabilities", "FP32", (-1, len(labels))),
                }
            return {"sentence_embedding": Tensor("sentence_embedding", "FP32", (-1, hidden))}
        outputs = [
            Tensor("sentence_embedding", "FP32", (-1, hidden)),
            Tensor("token_embeddings", "FP32", (-1, -1, hidden)),
            Tensor("hidden_states", "FP32", (-1, -1, -1, hidden)),
            *(Tensor(f"hidden_states.{i}", "FP32", (-1, -1, hidden)) for i in range(top + 1)),
            Tensor("lengths", "INT64", (-1,)),
            Tensor("chunk_embeddings", "FP32", (-1, hidden)),
            Tensor("chunk_spans", "INT32", (-1, 3)),
            Tensor("span_embeddings", "FP32", (-1, hidden)),
            Tensor("span_offsets", "INT32", (-1, 3)),
        ]
        if labels:
            outputs += [
                Tensor("logits", "FP32", (-1, len(labels))),
                Tensor("probabilities", "FP32", (-1, len(labels))),
                Tensor("label", "BYTES", (-1,)),
            ]
        return {tensor.name: tensor for tensor in outputs}

    @property
    def default_outputs(self) -> tuple[str, ...]:
        """What a request that names no output gets."""
        return ("label", "probabilities") if self.labels else ("sentence_embedding",)

    def other(self) -> str:
        """The other name of the same repository model (for messages)."""
        return self.model if self.features else self.model + FEATURES

    def check_input(self, index: int, name: str) -> None:
        """INVALID_ARGUMENT unless ``name`` is one of this model's inputs."""
        if name not in self.inputs:
            where = (
                ""
                if self.features
                else f"; {self.other()!r} takes {(*TEXT_INPUTS, *TOKEN_INPUTS, SPANS)}"
            )
            raise InvalidArgument(
                f"inputs[{index}].name={name!r}: not an input of model {self.name!r}; allowed "
                f"{list(self.inputs)}{where}"
            )

    def no_such_output(self, index: int, asked: str) -> InvalidArgument:
        where = "" if self.features else f"; model {self.other()!r} has every feature"
        counted = " (hidden_states.-1 … count from the last)" if self.features else ""
        return InvalidArgument(
            f"outputs[{index}].name={asked!r}: model {self.name!r} has no such output; "
            f"allowed {list(self.outputs)}{counted}{where}"
        )


def version_numbers(variants: list[str]) -> dict[str, str]:
    """Each variant's Triton version number, the same on every replica of a repository."""
    known = {name: index + 1 for index, name in enumerate(VARIANT_ORDER)}
    others = sorted(v for v in variants if v not in known)
    return {v: str(known[v] if v in known else len(known) + 1 + others.index(v)) for v in variants}


def variant_of(model: ModelPackage, version: str) -> str:
    """The variant a version names: its name, or its number (else ``version`` unchanged)."""
    by_number = {n: v for v, n in version_numbers(list(model.variants)).items()}
    return by_number.get(version, version)


def resolve(models: dict[str, ModelPackage], name: str) -> V2Model | None:
    """The v2 model called ``name``, or None when it names no repository model: a repository
    model of that exact name, else ``MODEL.features`` of a repository model MODEL."""
    if name in models:
        return V2Model(name, models[name], features=False)
    base = name.removesuffix(FEATURES)
    if base != name and base in models:
        return V2Model(name, models[base], features=True)
    return None


def names(models: dict[str, ModelPackage]) -> list[str]:
    """Every v2 model name, each repository model's two side by side."""
    return [n for model in sorted(models) for n in (model, model + FEATURES)]


def metadata(model: V2Model, versions: list[str]) -> v2.ModelMetadataResponse:
    tensor = v2.ModelMetadataResponse.TensorMetadata
    return v2.ModelMetadataResponse(
        name=model.name,
        versions=versions,
        platform=PLATFORM,
        inputs=[
            tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.inputs.values()
        ],
        outputs=[
            tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.outputs.values()
        ],
    )


def model_config(
    model: V2Model, version: str, settings: BatchSettings, config: ServerConfig
) -> mc.ModelConfig:
    """Triton's model configuration of one v2 model and version, from the batcher's settings.

    ``max_batch_size`` is the most sequences the batcher puts in one batch; a request may hold
    up to ``max_request_sequences`` (in ``parameters``), which the batcher splits. No preferred
    batch sizes: the batcher cuts batches by their measured cost instead.
    """
    manifest = model.package.manifest
    kind = (
        mc.ModelInstanceGroup.KIND_CPU if config.device == "cpu" else mc.ModelInstanceGroup.KIND_GPU
    )
    max_length = max_length_of(manifest)
    chunk_tokens, chunk_overlap = chunk_defaults(max_length)
    facts = {
        "variant": version,
        "max_request_sequences": config.max_request_sequences,
        "max_batch_tokens": settings.max_batch_tokens,
        "max_queue_requests": settings.max_queue_requests,
        "max_length": max_length,
        # long_text=chunk: the largest (and default) chunk_tokens and its default chunk_overlap
        "chunk_tokens": chunk_tokens,
        "chunk_overlap": chunk_overlap,
        "hidden_size": manifest["hidden_size"],
        "num_layers": manifest["num_layers"],
        "default_pooling": manifest.get("default_pooling", "cls"),
    }
    return mc.ModelConfig(
        name=model.name,
        platform=PLATFORM,
        backend="onnxruntime",
        max_batch_size=settings.max_batch_size,
        input=[
            mc.ModelInput(
                name=t.name,
                data_type=DATA_TYPES[t.datatype],
                dims=t.shape[1:],
                optional=t.optional,
            )
            for t in model.inputs.values()
        ],
        output=[
            mc.ModelOutput(name=t.name, data_type=DATA_TYPES[t.datatype], dims=t.shape[1:])
            for t in model.outputs.values()
        ],
        dynamic_batching=mc.ModelDynamicBatching(
            max_queue_delay_microseconds=round(settings.max_queue_delay_ms * 1000)
        ),
        instance_group=[mc.ModelInstanceGroup(kind=kind, count=config.instances)],
        default_model_filename="model.onnx",
        parameters={k: mc.ModelParameter(string_value=str(v)) for k, v in facts.items()},
        model_transaction_policy=mc.ModelTransactionPolicy(decoupled=False),
        response_cache=mc.ModelResponseCache(enable=False),
    )


def _duration(duration: Any) -> v2.StatisticDuration:
    return v2.StatisticDuration(count=duration.count, ns=duration.ns)


def model_statistics(
    name: str, variant: str, version: str, label: str, statistics: Statistics
) -> v2.ModelStatistics:
    """One v2 model and variant's statistics (``version``: the variant's number): its requests,
    and the batches of the variant (``label``) that computed them, whose batcher every name of
    the model shares."""
    requests = statistics.requests.get((name, variant)) or RequestStatistics()
    batches = statistics.batches.get(label)
    by_size = sorted(batches.by_size.items()) if batches else []
    return v2.ModelStatistics(
        name=name,
        version=version,
        last_inference=requests.last_inference_ms,
        inference_count=requests.inference_count,
        execution_count=sum(d.count for _, d in by_size),
        inference_stats=v2.InferStatistics(
            success=_duration(requests.success),
            fail=_duration(requests.fail),
            queue=_duration(requests.queue),
            compute_input=_duration(requests.compute_input),
            compute_infer=_duration(requests.compute_infer),
            compute_output=_duration(requests.compute_output),
        ),
        batch_stats=[
            v2.InferBatchStatistics(batch_size=size, compute_infer=_duration(d))
            for size, d in by_size
        ],
    )


def index_entry(
    name: str, version: str, *, loaded: bool, failed: str | None, room: bool, limit: int
) -> v2.RepositoryIndexResponse.ModelIndex:
    """READY (loaded, or loads on its first request) or UNAVAILABLE with the reason."""
    entry = v2.RepositoryIndexResponse.ModelIndex
    if loaded:
        return entry(name=name, version=version, state="READY")
    if failed:
        return entry(name=name, version=version, state="UNAVAILABLE", reason=failed)
    if not room:
        return entry(
            name=name,
            version=version,
            state="UNAVAILABLE",
            reason=f"not loaded: max_loaded_variants={limit} variants are loaded already",
        )
    return entry(name=name, version=version, state="READY", reason="loads on its first request")


def repository_index(
    models: dict[str, ModelPackage],
    servable: dict[str, list[str]],
    failed: dict[tuple[str, str], str],
    loaded: set[tuple[str, str]],
    limit: int,
    *,
    ready_only: bool = False,
) -> v2.RepositoryIndexResponse:
    """Both v2 names of every model with each variant (``servable``, and those refused at
    load), and of the models whose every package was refused (UNAVAILABLE, with why)."""
    entries = []
    room = len(loaded) < limit
    for model in sorted(models):
        variants = dict.fromkeys(servable[model])
        variants.update(dict.fromkeys(v for (m, v) in failed if m == model))
        for name in (model, model + FEATURES):
            for variant in variants:
                key = (model, variant)
                entries.append(
                    index_entry(
                        name,
                        variant,
                        loaded=key in loaded,
                        failed=failed.get(key),
                        room=room,
                        limit=limit,
                    )
                )
    for (model, variant), why in sorted(failed.items()):
        if model not in models:
            for name in (model, model + FEATURES):
                entries.append(
                    v2.RepositoryIndexResponse.ModelIndex(
                        name=name, version=variant, state="UNAVAILABLE", reason=why
                    )
                )
    if ready_only:
        entries = [entry for entry in entries if entry.state == "READY"]
    return v2.RepositoryIndexResponse(models=entries)
