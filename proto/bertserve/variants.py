"""The names every part of bertserve shares: model variants and Google's named BERT shapes.

Imports nothing, so the CLI, the client, the server and the exporter can all read it.
"""

from __future__ import annotations

# Every variant an export can write, in the order they are listed and tried.
VARIANTS = ("fp32", "fp32-opt", "int8", "fp16")
# What `bertserve export` (and `finetune`) write unless told otherwise.
DEFAULT_VARIANTS = ("fp32-opt", "int8")
# The arithmetic of each variant, recorded in its manifest.
PRECISION = {"fp32": "fp32", "fp32-opt": "fp32", "int8": "int8", "fp16": "fp16"}

# Google's published BERT shapes (layers, hidden, heads); intermediate is 4 x hidden.
CONFIGS: dict[str, tuple[int, int, int]] = {
    "bert-tiny": (2, 128, 2),
    "bert-mini": (4, 256, 4),
    "bert-small": (4, 512, 8),
    "bert-medium": (8, 512, 8),
    "bert-base": (12, 768, 12),
    "bert-large": (24, 1024, 16),
}
