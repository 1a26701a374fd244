"""The in-memory shape of a labelled text dataset, shared by every layer above `data`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    # 1-based line in the source file as an editor shows it (header included), so a report
    # can say "line 17"; for JSON arrays it is the record's index + 1.
    line: int


@dataclass
class TextDataset:
    examples: list[Example]
    text_column: str
    label_column: str
    source: str = ""          # the file name the user gave (for messages only)
    sha256: str = ""          # content hash of the original bytes
    format: str = ""          # csv | tsv | json | jsonl | parquet
    encoding: str = ""        # utf-8 | utf-8-sig | cp1252 | latin-1 (parquet: "binary")

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.examples]

    @property
    def label_names(self) -> list[str]:
        return sorted({e.label for e in self.examples})

    def __len__(self) -> int:
        return len(self.examples)

    def subset(self, indices) -> "TextDataset":
        return TextDataset([self.examples[i] for i in indices], self.text_column, self.label_column,
                           self.source, self.sha256, self.format, self.encoding)


@dataclass
class Splits:
    train: TextDataset
    validation: TextDataset
    test: TextDataset
    # "split" when carved from one file, "user" when the user gave a test file.
    test_origin: str = "split"
    label_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.label_names:
            self.label_names = self.train.label_names
