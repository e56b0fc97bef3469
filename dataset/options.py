"""What a dataset job computes for each row: the options of ``bertserve embed``, validated once."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

POOLINGS = ("cls", "pooler", "mean", "max", "none")
AGGREGATIONS = ("last", "concat_last_4", "sum_last_4", "mean_all")
DTYPES = ("float32", "float16", "bfloat16")
# The long-document options and their defaults (asked for nothing): a job's identity names
# them only when set, so outputs begun before they existed still resume.
LONG_DEFAULTS: dict[str, Any] = {
    "long_text": None,
    "chunk_tokens": 0,
    "chunk_overlap": None,
    "chunk_pooling": None,
}


@dataclass(frozen=True)
class FeatureOptions:
    """The features of each row, as ``bertserve embed`` names them.

    ``pooling`` None: the model's default pooling (or no sentence vector when ``layers`` are
    asked for, as in ``bertserve embed``); "none": no sentence vector. ``layers``: hidden
    states to keep per token ("all", or indices such as (-1, -2)). ``long_text``: "truncate",
    "error" or "chunk" (a long text's vector pooled across windows of ``chunk_tokens``
    sharing ``chunk_overlap``, by ``chunk_pooling``; hidden states stitched): as
    ``Client.embed`` has them.
    """

    pooling: str | None = None
    layers: tuple[int, ...] | str = ()
    aggregate: str | None = None
    normalize: bool = False
    dtype: str = "float32"
    truncate: bool = False
    long_text: str | None = None
    chunk_tokens: int = 0
    chunk_overlap: int | None = None
    chunk_pooling: str | None = None

    def __post_init__(self) -> None:
        from bertserve.client.long_text import parse

        parse(**self.long_words())  # the client's checks and messages
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r}: allowed {', '.join(POOLINGS)}")
        if self.aggregate is not None and self.aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate={self.aggregate!r}: allowed {', '.join(AGGREGATIONS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}: allowed {', '.join(DTYPES)}")
        if isinstance(self.layers, str) and self.layers != "all":
            raise ValueError(f"layers={self.layers!r}: 'all' or a tuple of layer indices")
        if not self.sentence and not self.layers:
            raise ValueError("nothing to compute: pooling 'none' needs layers")

    @classmethod
    def parse(
        cls,
        *,
        pooling: str | None = None,
        layers: str | tuple[int, ...] | list[int] | None = None,
        aggregate: str | None = None,
        normalize: bool = False,
        dtype: str = "float32",
        truncate: bool = False,
        long_text: str | None = None,
        chunk_tokens: int | None = None,
        chunk_overlap: int | None = None,
        chunk_pooling: str | None = None,
    ) -> FeatureOptions:
        """From CLI-style values: ``layers`` "all", "-1,-2" or a sequence of ints."""
        parsed: tuple[int, ...] | str = ()
        if isinstance(layers, str):
            if layers.strip().lower() == "all":
                parsed = "all"
            else:
                try:
                    parsed = tuple(int(x) for x in layers.split(",") if x.strip())
                except ValueError:
                    raise ValueError(
                        f"layers {layers!r}: use 'all' or comma-separated indices like -1,-2"
                    ) from None
        elif layers is not None:
            parsed = tuple(int(x) for x in layers)
        return cls(
            pooling,
            parsed,
            aggregate,
            normalize,
            dtype,
            truncate,
            long_text,
            chunk_tokens or 0,
            chunk_overlap,
            chunk_pooling,
        )

    @property
    def sentence(self) -> bool:
        """Whether each row gets a sentence vector."""
        if self.pooling == "none":
            return False
        return self.pooling is not None or not self.layers

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``bertserve.client.Client.embed`` for these options."""
        layers: Any = None
        if self.layers == "all":
            layers = "all"
        elif self.layers:
            layers = list(self.layers)
        return {
            "output": ["sentence"] if self.sentence else [],
            "pooling": self.pooling if self.sentence else "none",
            "layers": layers,
            "aggregate": self.aggregate,
            "normalize": self.normalize,
            "dtype": self.dtype,
            "truncate": self.truncate,
            **self.long_words(),
        }

    def long_words(self) -> dict[str, Any]:
        """The long-document keywords of ``Client.embed`` (unset ones left out)."""
        values = {name: getattr(self, name) for name in LONG_DEFAULTS}
        return {name: value for name, value in values.items() if value != LONG_DEFAULTS[name]}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
        for name, default in LONG_DEFAULTS.items():
            if data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureOptions:
        layers = data.get("layers") or ()
        return cls(
            data.get("pooling"),
            layers if isinstance(layers, str) else tuple(layers),
            data.get("aggregate"),
            bool(data.get("normalize")),
            data.get("dtype", "float32"),
            bool(data.get("truncate")),
            **{name: data.get(name, default) for name, default in LONG_DEFAULTS.items()},
        )
