"""What every benchmark that runs loads in rounds is told."""

from dataclasses import dataclass


@dataclass
class RoundSettings:
    """Rounds of every server taking its turn, seconds per load, warm-up loads before measuring."""

    rounds: int = 3
    duration: int = 8
    warmup: int = 1
