"""Corpora larger than one server: ``bertserve embed-dataset`` in this process or on Ray Data,
resumable, with the server's own model code (so the server's vectors), and ``Embedder`` for
``ray.data.Dataset.map_batches``. Nothing here imports Ray until a Ray job runs."""

from .embedder import Embedder
from .engine import ClientEngine, InProcessEngine, TextError
from .inputs import InputError
from .job import Job, run
from .options import FeatureOptions
from .output import read_output

__all__ = [
    "ClientEngine",
    "Embedder",
    "FeatureOptions",
    "InProcessEngine",
    "InputError",
    "Job",
    "TextError",
    "read_output",
    "run",
]
