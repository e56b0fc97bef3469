"""Typed export errors: each says what was wrong and what is allowed."""


class ExportError(Exception):
    """An export that cannot go on; the message is meant for the user."""


class NotBertError(ExportError):
    """The source is not a BERT checkpoint."""


class PackageExistsError(ExportError):
    """The target package exists and --force was not given."""


class ValidationError(ExportError):
    """An exported variant disagrees with PyTorch beyond its tolerance."""
