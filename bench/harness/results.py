"""Samples collected during a run, and their medians / ranges."""

import statistics
from dataclasses import asdict, dataclass, field


@dataclass
class Sample:
    """One measurement of one server (column) in one cell and round.

    ``error`` set means the run failed; its ``values`` (if any) are kept in the raw
    data but left out of every median.
    """

    cell: str
    column: str
    round: int
    values: dict = field(default_factory=dict)
    error: str = None


@dataclass
class Results:
    """Everything a run produced, ready to be dumped to results.json."""

    samples: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def add(self, cell, column, rnd, values=None, error=None):
        self.samples.append(Sample(cell, column, rnd, dict(values or {}), error))

    def note(self, text):
        if text not in self.notes:
            self.notes.append(text)

    def failures(self):
        return [s for s in self.samples if s.error]

    def summary(self):
        """``{cell: {column: {field: {"median", "min", "max", "n"}}}}`` over successful samples."""
        grouped = {}
        for s in self.samples:
            if s.error:
                continue
            for name, value in s.values.items():
                grouped.setdefault(s.cell, {}).setdefault(s.column, {}).setdefault(name, []).append(value)
        return {
            cell: {
                column: {name: describe(v) for name, v in fields.items()}
                for column, fields in columns.items()
            }
            for cell, columns in grouped.items()
        }

    def to_json(self):
        return {"samples": [asdict(s) for s in self.samples], "notes": self.notes, "summary": self.summary()}


def describe(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}
