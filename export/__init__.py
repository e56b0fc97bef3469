"""Offline export: a BERT checkpoint -> a validated ONNX model package per variant.

The only part of bertserve that needs torch, transformers and optimum; importing this
package loads none of them (``export_model`` does, when it runs).
"""

from __future__ import annotations

from bertserve.variants import CONFIGS, DEFAULT_VARIANTS, VARIANTS

from .errors import ExportError, NotBertError, PackageExistsError, ValidationError
from .package import export_model
from .sources import minilm_path

__all__ = [
    "CONFIGS",
    "DEFAULT_VARIANTS",
    "VARIANTS",
    "ExportError",
    "NotBertError",
    "PackageExistsError",
    "ValidationError",
    "export_model",
    "minilm_path",
]
