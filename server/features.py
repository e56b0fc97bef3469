"""Features from the model's outputs: layer selection and aggregation, pooling, normalisation,
output dtypes and the ragged packing of per-sequence results. Pure numpy, no gRPC."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureSpec:
    """What one request wants: validated, layers absolute (0 = embeddings, L = last layer)."""

    num_layers: int
    token_embeddings: bool = False
    pooling: str | None = None  # cls, pooler, mean or max; None for no sentence vector
    layers: tuple[int, ...] = ()
    aggregate: str = "last"
    normalize: bool = False
    dtype: str = "float32"
    logits: bool = False  # a classifier's "logits" (labels,) per sequence

    def representation_layers(self) -> tuple[int, ...]:
        """The hidden states the token representation is built from."""
        top = self.num_layers
        if self.aggregate in ("concat_last_4", "sum_last_4"):
            return tuple(range(top - 3, top + 1))
        if self.aggregate == "mean_all":
            return tuple(range(1, top + 1))
        return (top,)

    def needs_representation(self) -> bool:
        return self.token_embeddings or self.pooling in ("cls", "mean", "max")

    def model_outputs(self) -> set[str]:
        """The ONNX outputs this request needs fetched."""
        names = {f"hidden_states.{i}" for i in self.layers}
        if self.needs_representation():
            if self.aggregate == "last":
                names.add("last_hidden_state")
            else:
                names.update(f"hidden_states.{i}" for i in self.representation_layers())
        if self.pooling == "pooler":
            names.add("pooler_output")
        if self.logits:
            names.add("logits")
        return names


def representation(
    outputs: dict[str, np.ndarray], spec: FeatureSpec, row: int, length: int
) -> np.ndarray:
    """Token representation of one sequence: (length, hidden) float32, (length, 4*hidden) for
    concat_last_4."""
    if spec.aggregate == "last":
        return outputs["last_hidden_state"][row, :length].astype(np.float32)
    states = [
        outputs[f"hidden_states.{i}"][row, :length].astype(np.float32)
        for i in spec.representation_layers()
    ]
    if spec.aggregate == "concat_last_4":
        return np.concatenate(states, axis=-1)
    total = np.sum(states, axis=0)
    return total / len(states) if spec.aggregate == "mean_all" else total


def sequence_features(
    outputs: dict[str, np.ndarray], spec: FeatureSpec, row: int, mask: np.ndarray
) -> dict[str, np.ndarray]:
    """Features of batch row ``row`` whose real tokens have attention ``mask`` (length,).

    Token-level results are (length, width) float32, the sentence vector (width,) float32.
    """
    length = int(mask.shape[0])
    result: dict[str, np.ndarray] = {}
    if spec.needs_representation():
        tokens = representation(outputs, spec, row, length)
        if spec.token_embeddings:
            result["token_embeddings"] = tokens
        weights = mask.astype(np.float32)[:, None]
        if spec.pooling == "cls":
            result["sentence_embedding"] = tokens[0]
        elif spec.pooling == "mean":
            result["sentence_embedding"] = (tokens * weights).sum(axis=0) / max(weights.sum(), 1e-9)
        elif spec.pooling == "max":
            masked = np.where(weights > 0, tokens, -np.inf) if weights.any() else tokens
            result["sentence_embedding"] = masked.max(axis=0)
    if spec.pooling == "pooler":
        result["sentence_embedding"] = outputs["pooler_output"][row].astype(np.float32)
    if spec.normalize and "sentence_embedding" in result:
        result["sentence_embedding"] = unit(result["sentence_embedding"])
    for layer in spec.layers:
        result[f"hidden_states.{layer}"] = outputs[f"hidden_states.{layer}"][row, :length].astype(
            np.float32
        )
    if spec.logits:
        result["logits"] = outputs["logits"][row].astype(np.float32)
    return result


def unit(vector: np.ndarray) -> np.ndarray:
    """``vector`` (or each row of a matrix) scaled to length 1 (a zero vector stays zero)."""
    if vector.ndim == 1:
        return vector / max(float(np.linalg.norm(vector)), 1e-12)
    norms = np.maximum(np.linalg.norm(vector, axis=-1, keepdims=True), 1e-12)
    return (vector / norms).astype(np.float32)


SEQUENCE_OUTPUTS = ("sentence_embedding", "logits")  # one row per sequence, not per token


def pack(per_sequence: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join per-sequence results: token-level outputs row after row (total_tokens, width),
    the sentence vectors and logits stacked (sequences, width)."""
    names = per_sequence[0].keys()
    packed = {}
    for name in names:
        parts = [result[name] for result in per_sequence]
        packed[name] = np.stack(parts) if name in SEQUENCE_OUTPUTS else np.concatenate(parts)
    return packed


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, computed in float64."""
    exp = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def to_bfloat16_bits(array: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 as uint16 bit patterns (round to nearest even; NaN stays NaN)."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
    rounded = np.where(np.isnan(array), (bits >> 16) | 0x40, rounded)
    return rounded.astype(np.uint16)


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns -> float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def convert(array: np.ndarray, dtype: str) -> np.ndarray:
    """A float32 array in the wire dtype, little-endian: float32, float16 or bfloat16 (uint16)."""
    if dtype == "float16":
        return array.astype("<f2")
    if dtype == "bfloat16":
        return to_bfloat16_bits(array).astype("<u2")
    return array.astype("<f4")
