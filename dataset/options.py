"""What a dataset job computes for each row: the options of ``bertserve embed``, validated once."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

POOLINGS = ("cls", "pooler", "mean", "max", "none")
AGGREGATIONS = ("last", "concat_last_4", "sum_last_4", "mean_all")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class FeatureOptions:
    """The features of each row, as ``bertserve embed`` names them.

    ``pooling`` None: the model's default pooling (or no sentence vector when ``layers`` are
    asked for, as in ``bertserve embed``); "none": no sentence vector. ``layers``: hidden
    states to keep per token ("all", or indices such as (-1, -2)).
    """

    pooling: str | None = None
    layers: tuple[int, ...] | str = ()
    aggregate: str | None = None
    normalize: bool = False
    dtype: str = "float32"
    truncate: bool = False

    def __post_init__(self) -> None:
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
        return cls(pooling, parsed, aggregate, normalize, dtype, truncate)

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
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
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
        )
