"""A job's OUTPUT directory: the manifest, one Parquet file per block, one completion marker
per block.

    OUTPUT/manifest.json              model, variant, package checksum, options, runs
    OUTPUT/data/<file>.<block>.parquet    id (string), vector (fixed-size list), hidden_states_<k>
    OUTPUT/_done/<file>.<block>.json      written after its data file: rows, input fingerprint

Every file is written under a hidden temporary name, fsynced and renamed into place, and a
block's marker only after its data file: a block without a marker is computed again and its
data file replaced (same name), so a rerun after a crash never writes an id twice. Readers
should take the blocks with markers (:func:`read_output`); Parquet readers skip the hidden
temporary files by themselves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .inputs import Block

MANIFEST = "manifest.json"
FORMAT = "bertserve-dataset/1"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically and durably: written, fsynced, renamed, directory fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def data_path(output: Path, block: Block) -> Path:
    return output / "data" / f"{block.key}.parquet"


def marker_path(output: Path, block: Block) -> Path:
    return output / "_done" / f"{block.key}.json"


def arrow_type(dtype: str) -> Any:
    """How a vector element of ``dtype`` is stored: float32, float16, or bfloat16 as its
    uint16 bit pattern (Arrow has no bfloat16; widen with ``bits.astype(uint32) << 16``)."""
    import pyarrow as pa

    return {"float32": pa.float32(), "float16": pa.float16(), "bfloat16": pa.uint16()}[dtype]


def table(ids: list[str], features: dict[str, Any], dtype: str) -> Any:
    """The block's rows: ``id``, ``vector`` (fixed-size list) and ``hidden_states_<k>`` (a
    list of fixed-size lists per row), elements in ``dtype``."""
    import pyarrow as pa

    from .engine import to_dtype

    element = arrow_type(dtype)
    columns: dict[str, Any] = {"id": pa.array(ids, type=pa.string())}
    if "sentence_embedding" in features:
        vectors = to_dtype(features["sentence_embedding"], dtype)
        flat = pa.array(vectors.reshape(-1), type=element)
        columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    for name in sorted(k for k in features if k.startswith("hidden_states.")):
        per_row = features[name]
        width = per_row[0].shape[1]
        flat = pa.array(to_dtype(np.concatenate(per_row), dtype).reshape(-1), type=element)
        tokens = pa.FixedSizeListArray.from_arrays(flat, width)
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in per_row])]).astype(np.int32)
        columns[name.replace(".", "_")] = pa.ListArray.from_arrays(pa.array(offsets), tokens)
    return pa.table(columns)


def write_block(output: Path, block: Block, rows: Any, marker: dict[str, Any]) -> None:
    """The block's data file, then its marker (each atomic)."""
    import pyarrow.parquet as pq

    path = data_path(output, block)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(rows, tmp)
    with tmp.open("rb") as file:
        os.fsync(file.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    write_atomic(marker_path(output, block), json.dumps(marker).encode())


def done(output: Path, block: Block) -> dict[str, Any] | None:
    """The block's marker when it is complete for this same input, else None. A marker of a
    changed input file is an error: its other blocks could no longer be trusted."""
    marker = marker_path(output, block)
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if data.get("input") != block.file.fingerprint:
        raise ValueError(
            f"{block.file.path} has changed since {output} was written from it (size or "
            "modification time differ); embed it into a new OUTPUT directory"
        )
    if data.get("rows") != block.rows or not data_path(output, block).is_file():
        return None
    return data


def read_manifest(output: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(output) / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise ValueError(f"{output}/{MANIFEST}: not readable JSON ({error})") from None


def write_manifest(output: Path, manifest: dict[str, Any]) -> None:
    write_atomic(Path(output) / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


def read_output(output: str | Path) -> Any:
    """Every completed block of a job's OUTPUT as one pyarrow Table (blocks in name order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = Path(output)
    tables = []
    for marker in sorted((output / "_done").rglob("*.json")):
        relative = marker.relative_to(output / "_done").as_posix()[: -len(".json")]
        tables.append(pq.read_table(output / "data" / f"{relative}.parquet"))
    if not tables:
        raise ValueError(f"{output}: no completed block")
    return pa.concat_tables(tables)
