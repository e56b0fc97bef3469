"""The bertserve client: a Python client (blocking and asyncio) and the CLI.

Needs only grpcio, protobuf and numpy::

    from bertserve.client import Client

    with Client("127.0.0.1:50051") as client:
        result = client.embed(["I love Paris"], layers=[-1, -2])
        result.sentence_embedding  # (1, hidden) float32
        result.hidden_states[6][0]  # (tokens, hidden) float32 of layer 6, sequence 0
"""

from .aio import AsyncClient
from .client import Client
from .errors import BertserveError
from .request import EmbedOptions
from .results import (
    Classification,
    ClassifyResult,
    EmbedResult,
    Encoding,
    ModelInfo,
    Timing,
    VariantInfo,
)
from .tensors import tensor_to_numpy
from .tokenizer import ClientTokenizer, load_tokenizer

__all__ = [
    "AsyncClient",
    "BertserveError",
    "Classification",
    "ClassifyResult",
    "Client",
    "ClientTokenizer",
    "EmbedOptions",
    "EmbedResult",
    "Encoding",
    "ModelInfo",
    "Timing",
    "VariantInfo",
    "load_tokenizer",
    "tensor_to_numpy",
]
