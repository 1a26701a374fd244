"""Problems found in a user's data file, in a shape both people and programs can read.

Every problem is an `Issue` with a stable `code`: the web UI, the CLI and tests key on
the code, never on the wording of the message. Reading a file stops at the first
blocking problem by raising `DataError` (carrying one or more issues); validation
collects all issues into a report instead.

| code                  | severity | raised by  | meaning                                                      |
|-----------------------|----------|------------|--------------------------------------------------------------|
| encoding              | error    | readers    | bytes are neither UTF-8 nor plausible Windows-1252/Latin-1    |
| empty_file            | error    | readers    | no data rows (empty file, or a header and nothing else)       |
| ragged_row            | error    | readers    | a row has a different number of fields than the others        |
| bad_json              | error    | readers    | JSON/JSONL that does not parse, or a record that is no object |
| missing_column        | error    | readers    | a column named by the user is not in the file                 |
| no_text_column        | error    | readers    | no column looks like free text                                |
| no_label_column       | error    | readers    | no column looks like a label (few distinct short values)      |
| too_large             | error    | readers    | the file is over the byte or row limit                        |
| unsupported_format    | error    | readers    | a format we do not read (.xls, zip, gzip, broken parquet...) |
| missing_sheet         | error    | readers    | the Excel sheet named by the user is not in the workbook      |
| not_a_workbook        | error    | readers    | a sheet was named for a file that is not an Excel workbook    |
| empty_text            | error    | validation | rows whose text is empty                                      |
| missing_label         | error    | validation | rows whose label is empty                                     |
| rare_label            | error    | validation | a label with fewer than 2 examples                            |
| single_class          | error    | validation | only one distinct label: nothing to classify                  |
| duplicate             | warning  | validation | the same text and label appear more than once                 |
| conflicting_duplicate | warning  | validation | the same text appears with different labels                   |
| leakage               | warning  | validation | a test text also appears in the training data                 |
| imbalance             | warning  | validation | largest class is more than 10x the smallest                   |
| too_long              | warning  | validation | texts over the model's max length will be truncated           |
| unseen_label          | warning  | validation | a test label never appears in the training data               |

Image datasets (data/images.py; `line` is the image's place in reading order or its manifest row,
and the member's path is in the message, and in `column` when the issue is about one member):

| code                  | severity | raised by  | meaning                                                      |
|-----------------------|----------|------------|--------------------------------------------------------------|
| unsafe_member         | error    | images     | an archive member with `..`, an absolute path, a link or a device (nothing is extracted) |
| not_an_archive        | error    | images     | the source is neither a zip, a tar nor a folder               |
| corrupt_archive       | error    | images     | the zip/tar cannot be read                                    |
| too_many_images       | error    | images     | more members than ImageLimits.max_images                      |
| archive_too_large     | error    | images     | the images expand past ImageLimits.max_bytes (or 200x the archive) |
| bad_image             | error    | images     | zero-byte, corrupt, truncated or unsupported-format image     |
| image_too_large       | error    | images     | over the pixel limit (decompression bomb) or the per-file byte limit |
| animated_image        | error    | images     | an animated or multi-frame/page file                          |
| missing_image         | error    | images     | a manifest row names a file that is not in the archive        |
| missing_label         | error    | images     | an image outside any class folder, or a manifest row without a label |
| rare_label            | error    | images     | a label with fewer than 2 images                              |
| single_class          | error    | images     | every image has the same label                                |
| no_images             | error    | images     | no usable image in the training (or test) set                 |
| duplicate_image       | warning  | images     | the same bytes (sha256) more than once                        |
| image_leakage         | warning  | images     | a test image is byte-identical to a training image            |
| converted_mode        | warning  | images     | images not 8-bit RGB (CMYK, 16-bit, palette, RGBA, grey) converted |
| ignored_images        | warning  | images     | images outside the layout (val/ beside test/, not in the manifest) |
| imbalance, unseen_label | warning | images    | as for text                                                    |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]

# How many line numbers a message lists before summarising the rest as "and N more":
# a report naming 3,000 lines helps nobody, ten are enough to find the pattern.
MAX_LINES_SHOWN = 10


@dataclass
class Issue:
    severity: Severity
    code: str
    message: str
    fix: str
    line: int | None = None          # first line concerned (1-based, header included)
    column: str | None = None        # column concerned, when there is one
    count: int = 1                   # how many rows/values the issue covers
    lines: list[int] = field(default_factory=list)  # every line concerned (line == lines[0])
    file: str | None = None          # "train" / "test" (or a file name) when several are checked

    def __post_init__(self) -> None:
        # Keep `line` and `lines` consistent whichever one the caller filled in.
        if self.lines and self.line is None:
            self.line = self.lines[0]
        elif self.line is not None and not self.lines:
            self.lines = [self.line]

    def to_dict(self) -> dict:
        return asdict(self)

    def where(self, with_lines: bool = True) -> str:
        """'test file, line 17, column "text"' — the location part of a message."""
        parts = []
        if self.file:
            parts.append(f"{self.file} file")
        if self.lines and with_lines:
            parts.append(format_lines(self.lines, total=max(self.count, len(self.lines))))
        if self.column:
            parts.append(f'column "{self.column}"')
        return ", ".join(parts)

    def __str__(self) -> str:
        # Reader messages already say "line 17 has ..."; do not say it twice.
        said = self.line is not None and f"line {self.line}" in self.message
        where = self.where(with_lines=not said)
        head = f"[{self.severity} {self.code}]" + (f" {where}:" if where else "")
        return f"{head} {self.message}\n  Fix: {self.fix}"


def format_lines(lines: list[int], total: int | None = None, limit: int = MAX_LINES_SHOWN) -> str:
    """'line 4' / 'lines 4, 9, 12 and 40 more' with at most `limit` numbers shown."""
    total = len(lines) if total is None else total
    shown = ", ".join(str(n) for n in lines[:limit])
    word = "line" if total == 1 else "lines"
    rest = total - min(len(lines), limit)
    return f"{word} {shown}" + (f" and {rest} more" if rest > 0 else "")


class DataError(Exception):
    """A file that cannot be used as it is; `issues` says why and how to fix it."""

    def __init__(self, issues: Issue | list[Issue]):
        self.issues = [issues] if isinstance(issues, Issue) else list(issues)
        super().__init__(self._render())

    def __reduce__(self):
        # Rebuilt from its issues, not from the rendered message: it crosses from the process
        # that parsed the file to the API's (services/parsing.py).
        return (type(self), (self.issues,))

    @property
    def codes(self) -> list[str]:
        return [i.code for i in self.issues]

    def _render(self) -> str:
        return "\n".join(str(i) for i in self.issues)

    def __str__(self) -> str:
        return self._render()

    def to_dict(self) -> dict:
        return {"issues": [i.to_dict() for i in self.issues]}


def error(code: str, message: str, fix: str, **where) -> DataError:
    """Shorthand for the readers: one blocking issue wrapped in a DataError."""
    return DataError(Issue("error", code, message, fix, **where))
