"""The int8 verdict on both sides: the export's (validate.py) and the server's
(``int8_validated``), from a manifest written to a temporary package; and the default
variant chosen from configuration alone. No model runs here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bertserve.export import validate
from bertserve.export.manifest import write_manifest
from bertserve.server import models
from bertserve.server.config import ServerConfig
from bertserve.server.models import ModelRegistry, int8_validated

HIDDEN = {f"hidden_states.{i}": 0.3 for i in range(7)}


def _report(cosine: float, moved: float) -> validate.VariantReport:
    return validate.VariantReport(
        "int8",
        max_abs_error={"last_hidden_state": 0.2, "pooler_output": 0.01, **HIDDEN},
        cosine={"cls": cosine, "pooler": cosine, "mean": cosine},
        batch_invariance={"max_abs": moved, "text": "ok"},
    )


def _package(folder: Path, variant: str, validation: dict) -> Path:
    """A package folder as the export writes it (the model file is a placeholder)."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"not read by these tests")
    write_manifest(folder, {"name": "m", "variant": variant, "validation": validation})
    return folder


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.mark.parametrize(
    ("cosine", "moved", "why"),
    [
        (0.9940, 0.0, "cosine 0.9940"),  # close, but under 0.995
        (0.9990, 0.0035, "differ by up to 3.5e-03"),  # accurate, but moves with its batch
        (0.9810, 0.034, "cosine 0.9810"),  # the dynamic int8 of the issue: both
    ],
)
def test_an_int8_that_breaks_a_threshold_is_not_validated(
    tmp_path: Path, cosine: float, moved: float, why: str
) -> None:
    report = _report(cosine, moved)
    assert report.passed and report.flagged
    assert report.verdict.startswith("FLAGGED")
    folder = _package(tmp_path / "int8", "int8", report.as_dict())
    record = _manifest(folder)["validation"]
    assert record["validated"] is False and record["flagged"] is True
    assert record["batch_invariance"]["max_abs"] == moved
    usable, reason = int8_validated(_manifest(folder))
    assert not usable
    assert reason.startswith("failed validation") and why in reason


def test_an_int8_that_meets_both_thresholds_is_validated(tmp_path: Path) -> None:
    report = _report(0.9989, 0.0)
    assert report.passed and not report.flagged and report.verdict == "ok"
    folder = _package(tmp_path / "int8", "int8", report.as_dict())
    assert _manifest(folder)["validation"]["validated"] is True
    usable, reason = int8_validated(_manifest(folder))
    assert usable and reason.startswith("passed validation (worst mean-pooled cosine 0.9989")


def test_the_table_shows_both_numbers_and_the_missed_threshold() -> None:
    table = validate.format_table("m", [_report(0.9990, 0.0035)])
    header, row = table.splitlines()[1:3]
    assert "cos mean" in header and "alone≠batch" in header
    assert "0.99900" in row and "3.5e-03" in row
    assert row.endswith("FLAGGED: alone vs batched > 1e-03")


def test_a_package_without_a_batch_record_is_not_validated() -> None:
    """Exported before the alone-vs-batched check: its cosine alone does not make it valid."""
    old = {"validation": {"ran": True, "passed": True, "flagged": False, "cosine": {"mean": 0.999}}}
    usable, reason = int8_validated(old)
    assert not usable and "no batch-invariance record" in reason


def test_the_server_and_the_export_use_the_same_thresholds() -> None:
    assert models.INT8_MIN_COSINE == validate.MIN_MEAN_COSINE
    assert models.INT8_MAX_BATCH_DELTA == validate.MAX_BATCH_DELTA


def _repo(tmp_path: Path, int8: dict) -> Path:
    shapes = {"num_layers": 6, "hidden_size": 384, "vocab_size": 30522}
    for variant, validation in (("fp32-opt", {"ran": True, "passed": True}), ("int8", int8)):
        folder = tmp_path / "minilm" / variant
        _package(folder, variant, validation)
        manifest = _manifest(folder)
        (folder / "manifest.json").write_text(json.dumps({**manifest, **shapes}))
    return tmp_path


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_default_comes_from_configuration_even_for_a_validated_int8(
    tmp_path: Path, device: str
) -> None:
    repo = _repo(tmp_path, _report(0.9995, 0.0).as_dict())
    registry = ModelRegistry(ServerConfig(repo=repo, device=device))
    assert registry.default_variants == {"minilm": "fp32-opt"}  # no fp16 package here
    reason = registry.default_reasons["minilm"]
    assert reason.startswith("fp32-opt: the ")
    assert "int8 serves only when configured" in reason and "passed validation" in reason
    pinned = ModelRegistry(ServerConfig(repo=repo, device=device, variants={"minilm": "int8"}))
    assert pinned.default_variants == {"minilm": "int8"}
    assert pinned.default_reasons["minilm"] == "configured (variants.minilm: int8)"


def test_the_reason_says_why_an_unvalidated_int8_is_not_served(tmp_path: Path) -> None:
    repo = _repo(tmp_path, _report(0.981, 0.034).as_dict())
    reason = ModelRegistry(ServerConfig(repo=repo)).default_reasons["minilm"]
    assert reason.startswith("fp32-opt: the CPU default; int8 serves only when configured")
    assert "failed validation (worst mean-pooled cosine 0.9810" in reason
    assert "differ by up to 3.4e-02" in reason
