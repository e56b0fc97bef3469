"""The engines that turn texts into features: the model in this process, or running servers.

This is the only module of ``bertserve.dataset`` that touches the server: the in-process
engine holds the server's protocol-free core (``bertserve.server.core``: a ``ModelRegistry``
behind an ``Engine``) and sends it the same core requests its front doors send.

The in-process engine loads and warms a variant exactly as ``bertserve serve`` does (checksums,
warm-up, the batcher's cost model measured on this CPU) and runs every block through that
variant's own batcher, so rows are sorted by length and cut into batches by the server's
cost-aware planner, and the vectors are the server's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from .options import FeatureOptions

T = TypeVar("T")
# The batcher's queue bounds protect a server from its callers; a batch job is its only caller
# and hands it one block at a time, so a block of any size must fit.
QUEUE_SEQUENCES = 1 << 22
QUEUE_TOKENS = 1 << 31
_TEXT_INDEX = re.compile(r"^texts\[(\d+)\]: (.*)$", re.DOTALL)


class TextError(ValueError):
    """Text ``index`` of a call cannot be embedded (empty, too long without truncate, ...)."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"texts[{index}]: {reason}")
        self.index = index
        self.reason = reason


def _text_error(message: str) -> Exception:
    """A server's ``texts[i]: why`` message as a TextError; anything else as ValueError."""
    found = _TEXT_INDEX.match(message)
    return TextError(int(found[1]), found[2]) if found else ValueError(message)


class Engine(Protocol):
    """Features of texts: ``sentence_embedding`` (n, width) float32 and/or
    ``hidden_states.<layer>`` (absolute layer), a list of (length_i, hidden) float32."""

    def outputs(self, texts: Sequence[str]) -> dict[str, Any]: ...
    def close(self) -> None: ...


def package_info(repo: str | Path, model: str, variant: str | None) -> dict[str, Any]:
    """The model package a job will use, from its manifest (no model is loaded): model, variant,
    checksum (sha256 of the manifest's file table), hidden size, layers; ValueError naming what
    the repository holds when the model or variant is not there."""
    from bertserve.server.repository import scan_repository

    repo = Path(repo)
    if not repo.is_dir():
        raise ValueError(f"--repo {repo}: not a directory (a model repository: <model>/<variant>)")
    broken: dict[tuple[str, str], str] = {}
    models = scan_repository(repo, broken)
    if model not in models:
        refused = [why for (name, _), why in broken.items() if name == model]
        raise ValueError(
            refused[0]
            if refused
            else f"model {model!r} is not in {repo}; it holds {sorted(models) or 'no model'}"
        )
    package = models[model]
    name = variant or package.default_variant("cpu")
    if name not in package.variants:
        raise ValueError(
            f"variant {name!r} of model {model!r} is not in {repo}; it has {list(package.variants)}"
        )
    manifest = package.variants[name].manifest
    files = manifest.get("files") or {}
    return {
        "model": model,
        "variant": name,
        "checksum": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest(),
        "model_onnx_sha256": (files.get("model.onnx") or {}).get("sha256"),
        "hidden_size": int(manifest["hidden_size"]),
        "num_layers": int(manifest["num_layers"]),
        "default_pooling": manifest.get("default_pooling"),
    }


class InProcessEngine:
    """A model variant loaded in this process, as the server loads it, behind its batcher.

    The batcher is asyncio code whose queue, events and loop task belong to one event loop, so
    the engine owns one loop, run for its whole life by a daemon thread; :meth:`outputs` hands
    each block to it and waits. (``asyncio.run`` per block would make a new loop each time and
    strand the batcher's task and the registry's locks on the dead one.) Tokenizing happens on
    the calling thread, inference on the batcher's worker thread with ``threads`` onnxruntime
    intra-op threads (0: every CPU this process may use).
    """

    def __init__(
        self,
        repo: str | Path,
        model: str,
        variant: str | None = None,
        threads: int = 0,
        options: FeatureOptions | None = None,
    ) -> None:
        from bertserve.server.config import BatchSettings, ServerConfig
        from bertserve.server.core.engine import Engine
        from bertserve.server.errors import BertServeError
        from bertserve.server.models import ModelRegistry

        self.options = options or FeatureOptions()
        config = ServerConfig(
            repo=Path(repo),
            default_model=model,
            variants={model: variant} if variant else {},
            intra_op_threads=threads,
            batch=BatchSettings(max_queue_sequences=QUEUE_SEQUENCES, max_queue_tokens=QUEUE_TOKENS),
            log_json=False,
        ).validate()
        self._registry = ModelRegistry(config)
        self._core = Engine(self._registry, max_request_sequences=QUEUE_SEQUENCES)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"bertserve-engine-{model}", daemon=True
        )
        self._thread.start()
        try:
            self.variant = self._run(self._core.variant(model, variant or ""))
            self._options = _core_options(self.options)
            # the options checked against the model now, not at the first block
            self._core.spec(self._request(["."]), self.variant)
        except BertServeError as error:
            self.close()
            raise ValueError(str(error)) from None
        except BaseException:
            self.close()
            raise
        self.model = model
        self.variant_name = self.variant.package.name
        self.threads = self.variant.runtime.intra_op_threads

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _request(self, texts: list[str]) -> Any:
        from bertserve.server.core.request import Request, Texts

        variant = self.variant.package.name
        return Request(Texts(texts), self._options, model=self.variant.model.name, variant=variant)

    def outputs(self, texts: Sequence[str]) -> dict[str, Any]:
        """Features of ``texts`` (one block); TextError names a text that cannot be embedded."""
        from bertserve.server.errors import BertServeError

        if not texts:
            return {}
        try:
            result, _, _ = self._run(
                self._core.embed(self._request(list(texts)), None, _any_size, variant=self.variant)
            )
        except BertServeError as error:
            raise _text_error(str(error)) from None
        features: dict[str, Any] = {}
        ends = np.cumsum(result.lengths)[:-1]
        for name, array in result.outputs.items():
            if name == "sentence_embedding":
                features[name] = array
            elif name.startswith("hidden_states."):
                features[name] = np.split(array, ends)
        return features

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence vectors of ``texts``: (n, width) float32."""
        return self.outputs(texts)["sentence_embedding"]

    def close(self) -> None:
        """Stop the batcher and the loop's thread (idempotent)."""
        if self._loop.is_closed():
            return
        if self._loop.is_running():
            try:
                self._run(self._registry.close(timeout=1.0))
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
        self._loop.close()


async def _any_size(size: int) -> None:
    """A batch job's answers go to its own files: no message limit to admit them under."""


def _core_options(options: FeatureOptions) -> Any:
    """The core's options for a job's (the core checks them against the model)."""
    from bertserve.server.core.request import Options

    return Options(
        pooling="none" if not options.sentence else (options.pooling or "model"),
        layers=() if options.layers == "all" else tuple(options.layers),
        all_layers=options.layers == "all",
        aggregate=options.aggregate or "last",
        normalize=options.normalize,
        dtype=options.dtype,
        truncate=options.truncate,
        long_text=options.long_text or "",
        chunk_tokens=options.chunk_tokens,
        chunk_overlap=options.chunk_overlap,
        chunk_pooling=options.chunk_pooling or "mean",
    )


class ClientEngine:
    """Running servers (``host:port,...``) through the Python client: for fleets that already
    hold the models. A block travels as one Embed call (EmbedStream when it is large)."""

    def __init__(
        self,
        target: str,
        model: str,
        variant: str | None = None,
        options: FeatureOptions | None = None,
        timeout: float = 600.0,
    ) -> None:
        from bertserve.client import Client

        self.options = options or FeatureOptions()
        self.model = model
        self._client = Client(target, model=model, variant=variant, timeout=timeout)
        info = self._client.info(model)
        self.variant_name = variant or info.default_variant

    def outputs(self, texts: Sequence[str]) -> dict[str, Any]:
        from bertserve.client import BertserveError

        if not texts:
            return {}
        try:
            result = self._client.embed(list(texts), **self.options.client_kwargs())
        except BertserveError as error:
            # only the server's own refusals name a text; the rest (unreachable, ...) as they are
            if error.code.name != "INVALID_ARGUMENT":
                raise
            raise _text_error(error.details) from None
        features: dict[str, Any] = {}
        if result.sentence_embedding is not None:
            features["sentence_embedding"] = _float32(result.sentence_embedding)
        for layer, arrays in result.hidden_states.items():
            features[f"hidden_states.{layer}"] = [_float32(a) for a in arrays]
        return features

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.outputs(texts)["sentence_embedding"]

    def close(self) -> None:
        self._client.close()


def _float32(array: np.ndarray) -> np.ndarray:
    """The client's array as float32 (float16 and bfloat16 widen exactly, so converting back
    gives the server's bits)."""
    return np.asarray(array, dtype=np.float32)


def to_dtype(array: np.ndarray, dtype: str) -> np.ndarray:
    """float32 features in the output dtype, converted as the server converts its answers:
    float32, float16, or bfloat16 as uint16 bit patterns (round to nearest even)."""
    from bertserve.server.features import convert

    return convert(np.asarray(array, dtype=np.float32), dtype)
