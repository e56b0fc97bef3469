"""Which model answers a request that names none (issue 18: defaults that never surprise).

The rule: the model the operator marked (``default_model``); else, when the repository holds
exactly one model, that one; else none, and such a request is refused with the list of
models and how to name one. Never "the first by name": adding a model to a repository must
not silently change who answers. Classify without a model goes to the default when it has a
classifier head, else to the only model with one, else it is refused naming those that have
one.

A refusal is FAILED_PRECONDITION, not INVALID_ARGUMENT: an empty model name is a valid
request (it is answered on a server with one model or a default model); it fails only
because of this server's state (its repository and configuration).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from bertserve.server.errors import FailedPrecondition

SETTING = "default_model"


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in sorted(names))


def choose_default(
    models: Collection[str], configured: str | None, refused: Iterable[str] = (), where: str = ""
) -> str | None:
    """The model that answers requests naming none, or None: several models and no default.

    ``models``: the servable models; ``refused``: models of the repository refused at scan
    (a damaged package still counts as a model: fixing it must not change who answers).
    ValueError when ``configured`` names no model of either (a startup error); one refused
    at scan stays the default, and requests naming none get its refusal.
    """
    every = set(models) | set(refused)
    if configured:
        if configured not in every:
            where = f" in {where}" if where else ""
            raise ValueError(
                f"{SETTING}={configured!r}: no such model{where}; it holds {_names(every)} "
                "(--default-model, YAML default_model:, $BERTSERVE_DEFAULT_MODEL)"
            )
        return configured
    return next(iter(models)) if len(every) == 1 and models else None


def no_default(models: Collection[str]) -> FailedPrecondition:
    """The refusal of a request that names no model on a server without a default model."""
    return FailedPrecondition(
        f"empty, and this server has {len(models)} models and no default model; name one of "
        f"{_names(models)} (or its operator marks one with {SETTING})",
        ("model",),
    )


def classify_model(default: str | None, labelled: Mapping[str, bool]) -> str:
    """The model Classify uses when a request names none.

    ``labelled``: every model -> whether it has a classifier head (labels). The default model
    when it has a head; else the only model with one; else FAILED_PRECONDITION naming the
    models that have one (or saying that none has).
    """
    if default is not None and labelled.get(default):
        return default
    heads = sorted(name for name, has in labelled.items() if has)
    if len(heads) == 1:
        return heads[0]
    if not heads:
        which = (
            f"model {next(iter(labelled))!r} has no"
            if len(labelled) == 1
            else "no model of this server has a"
        )
        raise FailedPrecondition(
            f"empty, and {which} classification head (no labels in its manifest); Classify "
            "needs a model exported from a fine-tuned sequence-classification checkpoint "
            "(bertserve finetune). Use Embed for features",
            ("model",),
        )
    why = (
        f"the default model {default!r} has no classification head and"
        if default is not None
        else "this server has no default model and"
    )
    raise FailedPrecondition(
        f"empty, and {why} {len(heads)} models have one; name one of {_names(heads)}",
        ("model",),
    )
