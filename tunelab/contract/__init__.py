"""The API's wire shapes: every response body (and the error body) as pydantic models.

The server declares them as its routes' `response_model`s (so /openapi.json documents exactly
what it sends) and `tunelab.sdk` parses responses with the very same classes, so the client and
the server cannot drift. Only pydantic is imported here: the SDK stays light and this package
sits at the bottom of the layers (tests/test_layering.py)."""

from .base import Deleted, ErrorBody, ErrorDetail, Obj
from .billing import (Adjustment, Balance, CalibrationTable, DailyUsage, Estimate, Grant, JobCost, JobCostList,
                      LedgerPage, PriceSheet, QuotaLimits, Quotas, Reconciliation)
from .infrastructure import (CostBasis, Costs, FigureChange, FigureHistory, HardwareFigure, HardwareRun, HistoryPoint,
                             Infrastructure, InfrastructureExport, Inventory, ModelCost, ModelThroughput,
                             RunComparison, TypicalJob)
from .deployments import Deployment, DeploymentCreate, DeploymentList
from .metrics import ComparisonRow, RunMetrics
from .openai import (ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Completion, CompletionRequest,
                     FileDeleted, FileList, FileObject, FineTuningCheckpointList, FineTuningEventList, FineTuningJob,
                     FineTuningJobList, OpenAIModel, OpenAIModelDeleted, OpenAIModelList)
from .resources import (TERMINAL, ApiKey, ApiKeyList, AuditPage, Comparison, ComparisonList, Dataset, DatasetList,
                        DatasetPreview, EventPage, ImagePrediction, ImagePredictionList, ImageRow, Job, JobError,
                        JobEvent, JobList, Model, ModelList, Prediction,
                        PredictionList, Tenant, User, UserList, Webhook, WebhookDelivery, WebhookDeliveryList,
                        WebhookList)

__all__ = [name for name in dir() if name[0].isupper()]
