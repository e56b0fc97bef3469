"""The docs runner borrows tritonclient's venv fixture from tests/oip (one venv for both)."""

from oip.conftest import tritonclient_python  # noqa: F401  (a fixture, used by name)
