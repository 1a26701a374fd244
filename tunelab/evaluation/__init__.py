from .intervals import (format_short, format_with_interval, macro_f1_accuracy_intervals, mean_interval,
                        paired_difference_interval, wilson_interval)
from .metrics import classification_metrics, timed_predict

__all__ = ["classification_metrics", "format_short", "format_with_interval", "macro_f1_accuracy_intervals",
           "mean_interval", "paired_difference_interval", "timed_predict", "wilson_interval"]
