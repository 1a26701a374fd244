from .metrics import classification_metrics, timed_predict

__all__ = ["classification_metrics", "timed_predict"]
