"""Reading, checking, splitting and storing users' labelled text files.

    ds = read_table("reviews.csv")                 # DataError with line + fix when unreadable
    report = validate(ds, max_length=256, count_tokens=tok_counter)
    splits = split_dataset(ds, seed=0)             # stratified, deterministic
    entry = DatasetStore(root).import_file("reviews.csv")
"""

from .dataset import Example, Splits, TextDataset
from .errors import DataError, Issue
from .readers import DataLimits, read_table
from .split import sample_per_class, split_dataset, stratified_limit
from .stats import compute_stats
from .store import DatasetStore, StoredDataset
from .validation import Report, validate

__all__ = [
    "Example", "TextDataset", "Splits", "Issue", "DataError", "DataLimits", "read_table",
    "validate", "Report", "compute_stats", "split_dataset", "sample_per_class",
    "stratified_limit", "DatasetStore", "StoredDataset",
]
