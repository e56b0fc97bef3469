"""server.example.yaml: every setting of server/config.py, each at its default."""

from __future__ import annotations

import re

from bertserve.server.config import load_config, settings
from docblocks import ROOT

EXAMPLE = ROOT / "server.example.yaml"


def test_example_holds_every_setting():
    """Each setting appears, active or commented out, so the file shows everything there is."""
    keys = set(re.findall(r"^\s*(?:#\s*)?(\w+):", EXAMPLE.read_text(), re.MULTILINE))
    missing = sorted(f.name for f in settings() if f.name not in keys)
    assert not missing, f"server.example.yaml lacks {missing}: add each with its default"


def test_example_is_the_defaults(tmp_path, monkeypatch):
    """Loaded, the file gives exactly the configuration of no file (with its repository)."""
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)  # the file's repo: models, relative to where serve starts
    from_file = load_config({}, EXAMPLE, environ={})
    defaults = load_config({"repo": "models"}, None, environ={})
    assert from_file == defaults
