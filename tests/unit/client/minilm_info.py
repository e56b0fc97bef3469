"""The ModelInfo of the bundled all-MiniLM-L6-v2 as a server reports it, for request-building
tests that need no server."""

from bertserve.client.results import ModelInfo

MINILM_INFO = ModelInfo(
    name="minilm",
    architecture="BertModel",
    num_layers=6,
    hidden_size=384,
    num_heads=12,
    intermediate_size=1536,
    max_length=512,
    vocab_size=30522,
    lowercase=True,
    random_weights=False,
    source="",
    default_pooling="mean",
    default_variant="fp32",
    variants=[],
    labels=[],
    is_default=True,
    chunk_tokens=510,
    chunk_overlap=63,
)
