from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT16: _ClassVar[DType]
    DTYPE_BFLOAT16: _ClassVar[DType]
    DTYPE_INT32: _ClassVar[DType]
    DTYPE_INT64: _ClassVar[DType]

class Pooling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOLING_UNSPECIFIED: _ClassVar[Pooling]
    POOLING_NONE: _ClassVar[Pooling]
    POOLING_CLS: _ClassVar[Pooling]
    POOLING_POOLER: _ClassVar[Pooling]
    POOLING_MEAN: _ClassVar[Pooling]
    POOLING_MAX: _ClassVar[Pooling]

class Aggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_UNSPECIFIED: _ClassVar[Aggregation]
    AGGREGATION_LAST: _ClassVar[Aggregation]
    AGGREGATION_CONCAT_LAST_4: _ClassVar[Aggregation]
    AGGREGATION_SUM_LAST_4: _ClassVar[Aggregation]
    AGGREGATION_MEAN_ALL: _ClassVar[Aggregation]

class LongText(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LONG_TEXT_UNSPECIFIED: _ClassVar[LongText]
    LONG_TEXT_TRUNCATE: _ClassVar[LongText]
    LONG_TEXT_ERROR: _ClassVar[LongText]
    LONG_TEXT_CHUNK: _ClassVar[LongText]

class ChunkPooling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHUNK_POOLING_UNSPECIFIED: _ClassVar[ChunkPooling]
    CHUNK_POOLING_MEAN: _ClassVar[ChunkPooling]
    CHUNK_POOLING_MAX: _ClassVar[ChunkPooling]
    CHUNK_POOLING_FIRST: _ClassVar[ChunkPooling]

class Split(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPLIT_NONE: _ClassVar[Split]
    SPLIT_SENTENCES: _ClassVar[Split]
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT16: DType
DTYPE_BFLOAT16: DType
DTYPE_INT32: DType
DTYPE_INT64: DType
POOLING_UNSPECIFIED: Pooling
POOLING_NONE: Pooling
POOLING_CLS: Pooling
POOLING_POOLER: Pooling
POOLING_MEAN: Pooling
POOLING_MAX: Pooling
AGGREGATION_UNSPECIFIED: Aggregation
AGGREGATION_LAST: Aggregation
AGGREGATION_CONCAT_LAST_4: Aggregation
AGGREGATION_SUM_LAST_4: Aggregation
AGGREGATION_MEAN_ALL: Aggregation
LONG_TEXT_UNSPECIFIED: LongText
LONG_TEXT_TRUNCATE: LongText
LONG_TEXT_ERROR: LongText
LONG_TEXT_CHUNK: LongText
CHUNK_POOLING_UNSPECIFIED: ChunkPooling
CHUNK_POOLING_MEAN: ChunkPooling
CHUNK_POOLING_MAX: ChunkPooling
CHUNK_POOLING_FIRST: ChunkPooling
SPLIT_NONE: Split
SPLIT_SENTENCES: Split

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class TokenSequence(_message.Message):
    __slots__ = ("input_ids", "attention_mask", "token_type_ids")
    INPUT_IDS_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_MASK_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_IDS_FIELD_NUMBER: _ClassVar[int]
    input_ids: _containers.RepeatedScalarFieldContainer[int]
    attention_mask: _containers.RepeatedScalarFieldContainer[int]
    token_type_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, input_ids: _Optional[_Iterable[int]] = ..., attention_mask: _Optional[_Iterable[int]] = ..., token_type_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("id", "model", "variant", "texts", "text_pairs", "sequences", "token_embeddings", "pooling", "layers", "all_layers", "aggregate", "normalize", "dtype", "truncate", "long_text", "chunk_tokens", "chunk_overlap", "chunk_pooling", "return_chunks", "spans", "split")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TEXT_PAIRS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    ALL_LAYERS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    LONG_TEXT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    CHUNK_POOLING_FIELD_NUMBER: _ClassVar[int]
    RETURN_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    variant: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    text_pairs: _containers.RepeatedScalarFieldContainer[str]
    sequences: _containers.RepeatedCompositeFieldContainer[TokenSequence]
    token_embeddings: bool
    pooling: Pooling
    layers: _containers.RepeatedScalarFieldContainer[int]
    all_layers: bool
    aggregate: Aggregation
    normalize: bool
    dtype: DType
    truncate: bool
    long_text: LongText
    chunk_tokens: int
    chunk_overlap: int
    chunk_pooling: ChunkPooling
    return_chunks: bool
    spans: _containers.RepeatedCompositeFieldContainer[Span]
    split: Split
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., variant: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., text_pairs: _Optional[_Iterable[str]] = ..., sequences: _Optional[_Iterable[_Union[TokenSequence, _Mapping]]] = ..., token_embeddings: _Optional[bool] = ..., pooling: _Optional[_Union[Pooling, str]] = ..., layers: _Optional[_Iterable[int]] = ..., all_layers: _Optional[bool] = ..., aggregate: _Optional[_Union[Aggregation, str]] = ..., normalize: _Optional[bool] = ..., dtype: _Optional[_Union[DType, str]] = ..., truncate: _Optional[bool] = ..., long_text: _Optional[_Union[LongText, str]] = ..., chunk_tokens: _Optional[int] = ..., chunk_overlap: _Optional[int] = ..., chunk_pooling: _Optional[_Union[ChunkPooling, str]] = ..., return_chunks: _Optional[bool] = ..., spans: _Optional[_Iterable[_Union[Span, _Mapping]]] = ..., split: _Optional[_Union[Split, str]] = ...) -> None: ...

class Span(_message.Message):
    __slots__ = ("text", "start", "end")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    text: int
    start: int
    end: int
    def __init__(self, text: _Optional[int] = ..., start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class TensorPiece(_message.Message):
    __slots__ = ("name", "row_offset", "total_rows", "tensor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROW_OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROWS_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    row_offset: int
    total_rows: int
    tensor: Tensor
    def __init__(self, name: _Optional[str] = ..., row_offset: _Optional[int] = ..., total_rows: _Optional[int] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("tokenization_ns", "queue_ns", "inference_ns", "total_ns", "tokens", "computed_tokens")
    TOKENIZATION_NS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_NS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_NS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_NS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokenization_ns: int
    queue_ns: int
    inference_ns: int
    total_ns: int
    tokens: int
    computed_tokens: int
    def __init__(self, tokenization_ns: _Optional[int] = ..., queue_ns: _Optional[int] = ..., inference_ns: _Optional[int] = ..., total_ns: _Optional[int] = ..., tokens: _Optional[int] = ..., computed_tokens: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    reason: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("id", "model", "variant", "lengths", "truncated", "outputs", "timing", "chunk", "last", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    LENGTHS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    variant: str
    lengths: _containers.RepeatedScalarFieldContainer[int]
    truncated: _containers.RepeatedScalarFieldContainer[int]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorPiece]
    timing: Timing
    chunk: int
    last: bool
    error: Error
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., variant: _Optional[str] = ..., lengths: _Optional[_Iterable[int]] = ..., truncated: _Optional[_Iterable[int]] = ..., outputs: _Optional[_Iterable[_Union[TensorPiece, _Mapping]]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., chunk: _Optional[int] = ..., last: _Optional[bool] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class TokenizeRequest(_message.Message):
    __slots__ = ("model", "texts", "text_pairs", "pad_to", "truncate")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TEXT_PAIRS_FIELD_NUMBER: _ClassVar[int]
    PAD_TO_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    text_pairs: _containers.RepeatedScalarFieldContainer[str]
    pad_to: int
    truncate: bool
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., text_pairs: _Optional[_Iterable[str]] = ..., pad_to: _Optional[int] = ..., truncate: _Optional[bool] = ...) -> None: ...

class Offset(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Encoding(_message.Message):
    __slots__ = ("tokens", "input_ids", "attention_mask", "token_type_ids", "offsets", "special_tokens_mask", "truncated")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_IDS_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_MASK_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_IDS_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_TOKENS_MASK_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    input_ids: _containers.RepeatedScalarFieldContainer[int]
    attention_mask: _containers.RepeatedScalarFieldContainer[int]
    token_type_ids: _containers.RepeatedScalarFieldContainer[int]
    offsets: _containers.RepeatedCompositeFieldContainer[Offset]
    special_tokens_mask: _containers.RepeatedScalarFieldContainer[bool]
    truncated: int
    def __init__(self, tokens: _Optional[_Iterable[str]] = ..., input_ids: _Optional[_Iterable[int]] = ..., attention_mask: _Optional[_Iterable[int]] = ..., token_type_ids: _Optional[_Iterable[int]] = ..., offsets: _Optional[_Iterable[_Union[Offset, _Mapping]]] = ..., special_tokens_mask: _Optional[_Iterable[bool]] = ..., truncated: _Optional[int] = ...) -> None: ...

class TokenizeResponse(_message.Message):
    __slots__ = ("model", "encodings")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    model: str
    encodings: _containers.RepeatedCompositeFieldContainer[Encoding]
    def __init__(self, model: _Optional[str] = ..., encodings: _Optional[_Iterable[_Union[Encoding, _Mapping]]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("id", "model", "variant", "texts", "text_pairs", "truncate", "top_k", "sequences", "logits", "token_embeddings", "pooling", "layers", "all_layers", "aggregate", "normalize", "dtype")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TEXT_PAIRS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    ALL_LAYERS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    variant: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    text_pairs: _containers.RepeatedScalarFieldContainer[str]
    truncate: bool
    top_k: int
    sequences: _containers.RepeatedCompositeFieldContainer[TokenSequence]
    logits: bool
    token_embeddings: bool
    pooling: Pooling
    layers: _containers.RepeatedScalarFieldContainer[int]
    all_layers: bool
    aggregate: Aggregation
    normalize: bool
    dtype: DType
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., variant: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., text_pairs: _Optional[_Iterable[str]] = ..., truncate: _Optional[bool] = ..., top_k: _Optional[int] = ..., sequences: _Optional[_Iterable[_Union[TokenSequence, _Mapping]]] = ..., logits: _Optional[bool] = ..., token_embeddings: _Optional[bool] = ..., pooling: _Optional[_Union[Pooling, str]] = ..., layers: _Optional[_Iterable[int]] = ..., all_layers: _Optional[bool] = ..., aggregate: _Optional[_Union[Aggregation, str]] = ..., normalize: _Optional[bool] = ..., dtype: _Optional[_Union[DType, str]] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("labels", "label")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelScore]
    label: str
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., label: _Optional[str] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("id", "model", "results", "timing", "variant", "lengths", "truncated", "outputs")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    LENGTHS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    timing: Timing
    variant: str
    lengths: _containers.RepeatedScalarFieldContainer[int]
    truncated: _containers.RepeatedScalarFieldContainer[int]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorPiece]
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., variant: _Optional[str] = ..., lengths: _Optional[_Iterable[int]] = ..., truncated: _Optional[_Iterable[int]] = ..., outputs: _Optional[_Iterable[_Union[TensorPiece, _Mapping]]] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class VariantInfo(_message.Message):
    __slots__ = ("name", "precision", "execution_provider", "loaded", "size_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    precision: str
    execution_provider: str
    loaded: bool
    size_bytes: int
    def __init__(self, name: _Optional[str] = ..., precision: _Optional[str] = ..., execution_provider: _Optional[str] = ..., loaded: _Optional[bool] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "architecture", "num_layers", "hidden_size", "num_heads", "intermediate_size", "max_length", "vocab_size", "lowercase", "random_weights", "source", "default_pooling", "default_variant", "variants", "labels", "is_default", "default_variant_reason", "chunk_tokens", "chunk_overlap")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_HEADS_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOWERCASE_FIELD_NUMBER: _ClassVar[int]
    RANDOM_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_POOLING_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VARIANT_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VARIANT_REASON_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    name: str
    architecture: str
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    max_length: int
    vocab_size: int
    lowercase: bool
    random_weights: bool
    source: str
    default_pooling: Pooling
    default_variant: str
    variants: _containers.RepeatedCompositeFieldContainer[VariantInfo]
    labels: _containers.RepeatedScalarFieldContainer[str]
    is_default: bool
    default_variant_reason: str
    chunk_tokens: int
    chunk_overlap: int
    def __init__(self, name: _Optional[str] = ..., architecture: _Optional[str] = ..., num_layers: _Optional[int] = ..., hidden_size: _Optional[int] = ..., num_heads: _Optional[int] = ..., intermediate_size: _Optional[int] = ..., max_length: _Optional[int] = ..., vocab_size: _Optional[int] = ..., lowercase: _Optional[bool] = ..., random_weights: _Optional[bool] = ..., source: _Optional[str] = ..., default_pooling: _Optional[_Union[Pooling, str]] = ..., default_variant: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[VariantInfo, _Mapping]]] = ..., labels: _Optional[_Iterable[str]] = ..., is_default: _Optional[bool] = ..., default_variant_reason: _Optional[str] = ..., chunk_tokens: _Optional[int] = ..., chunk_overlap: _Optional[int] = ...) -> None: ...

class ModelInfoResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...
