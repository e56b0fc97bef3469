"""The fine-tuning recipe's settings: no torch here, so the CLI can show the defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """The training recipe; the defaults were chosen by measurement (README, fine-tuning)."""

    epochs: int = 2
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 64
    seed: int = 0
    warmup: float = 0.1  # fraction of all steps spent warming the learning rate up
    weight_decay: float = 0.01
    patience: int = 1  # epochs without a better validation macro-F1 before stopping
    group_by_length: bool = True

    def check(self) -> Settings:
        problems = [
            f"{name}={value}: must be positive"
            for name, value in (
                ("epochs", self.epochs),
                ("lr", self.lr),
                ("batch_size", self.batch_size),
                ("max_length", self.max_length),
                ("patience", self.patience),
            )
            if value <= 0
        ]
        if not 0 <= self.warmup < 1:
            problems.append(f"warmup={self.warmup}: allowed 0 <= warmup < 1")
        if problems:
            raise ValueError("; ".join(problems))
        return self
