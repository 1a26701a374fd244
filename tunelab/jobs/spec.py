"""What a job runs: validated at the API boundary, stored with the job, handed to the child."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticKnownError


def _json_integer(value):
    # JSON Schema's integer: 3 and 3.0, not `true` nor "3" (pydantic's lax mode takes both)
    if isinstance(value, (bool, str)):
        raise ValueError("must be an integer")
    return value


def json_int(**constraints):
    """An integer field as JSON Schema means it; constraints (gt, ge, ...) come before the
    validator, or pydantic writes them into the document as unknown keywords (`"gt": 0`)."""
    return Annotated[int, Field(strict=False, **constraints), BeforeValidator(_json_integer)]


JsonInt = json_int()

MAX_BUDGET_SECONDS = 7 * 24 * 3600     # engine.budget.parse_duration's bound
MAX_BUDGET_USD = 10_000.0
MAX_PROCESSES = 64
PROCESSES_ON_OTHERS = ("`processes` is for train jobs: a comparison runs its candidates in one process each, a benchmark "
                       "or a batch prediction in one; leave it out (or 1)")
BUDGET_ON_TRAIN = ("`budget_seconds`, `budget_usd` and `exhaustive` are for compare jobs (kind \"compare\"); "
                   "a train job runs its one strategy to the end")
BENCH = "bench-hardware"
# A hardware benchmark job measures the worker's machine: nothing of a training job applies to it.
# Each field here must keep its default (null, empty, false) on such a job; the document says so.
NOT_ON_BENCH = {"dataset_id": None, "test_dataset_id": None, "strategy": None, "strategies": [], "params": {},
                "strategy_params": {}, "limit": None, "auto_fit": False, "budget_seconds": None, "budget_usd": None,
                "exhaustive": False}
TRAINING_ON_BENCH = ("does not apply to a hardware benchmark job (kind \"bench-hardware\"): it measures the "
                     "worker's machine and takes no dataset, strategy, hyperparameters, row limit nor budget; "
                     "only `quick` and `sweep`")
BATCH = "batch-predict"
# A batch-prediction job labels the texts of one file (`dataset_id`) with a tuned model (`tuned_model`);
# nothing of training applies to it. Each field here keeps its default on such a job.
NOT_ON_BATCH = {k: v for k, v in NOT_ON_BENCH.items() if k != "dataset_id"} | {"quick": True, "sweep": True}
TRAINING_ON_BATCH = ("does not apply to a batch-prediction job (kind \"batch-predict\"): it labels the texts of "
                     "`dataset_id` with `tuned_model`; only `top_k`, `output_format` and `text_column`")
# The batch fields' defaults: left out (or at these) on the other kinds.
BATCH_DEFAULTS = {"tuned_model": None, "top_k": 3, "output_format": "csv", "text_column": None}
BATCH_ON_OTHERS = ("is for batch-prediction jobs (kind \"batch-predict\"); on the other kinds leave it out")
BENCH_ON_TRAINING = ("`quick` and `sweep` are for hardware benchmark jobs (kind \"bench-hardware\"); on a train "
                     "or compare job leave them out (or true)")
# strict: a JSON number (3 or 2.5), not `true` nor "600"; NaN and infinities are refused
BudgetSeconds = Annotated[float, Field(gt=0, le=MAX_BUDGET_SECONDS, strict=True, allow_inf_nan=False)]
# A human name (a dataset's, a tuned model's): printable, not blank, at most 120 characters; trimmed.
# The pattern says it in the document too, so what the schema allows the service takes.
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
ModelName = Annotated[str, Field(min_length=1, max_length=120, pattern=NAME_PATTERN, strict=True),
                      AfterValidator(str.strip)]
BudgetUsd = Annotated[float, Field(gt=0, le=MAX_BUDGET_USD, strict=True, allow_inf_nan=False)]


def strategy_params_schemas() -> tuple[list[str], dict[str, dict]]:
    """The registered strategies' names and each one's hyperparameters as JSON Schema."""
    from ..strategies import available, get_strategy

    names = sorted(available())
    params = {n: get_strategy(n).Params.model_json_schema() for n in names}
    for p in params.values():
        p.pop("title", None)
    return names, params


def model_schema() -> dict:
    from ..models.catalog import list_models

    return {"anyOf": [{"type": "string", "enum": [m.name for m in list_models()]},
                      {"type": "string", "pattern": "^upload:"}], "default": "minilm",
            "description": "a catalog model or one of your uploaded models (upload:…)"}


def _document(schema: dict) -> None:
    """What the service refuses, in the OpenAPI document and not only in code (check_spec and the
    validators below): a train job names a registered strategy and that strategy's hyperparameters;
    a compare job names at least one; both name a dataset; a model is a catalog name or an uploaded
    model. Fields a kind ignores (a train job's `strategies`, a compare job's `params`, a benchmark's
    `model`, `seed`, `suffix`) stay unconstrained there. A comparison's budget and `exhaustive` are
    refused on a train job: null / false there. A benchmark job takes no dataset, strategy or budget
    (NOT_ON_BENCH: null, empty, false there), and `quick` / `sweep` are refused on the other kinds
    unless left at their default (true)."""
    names, params = strategy_params_schemas()
    props = schema["properties"]
    props["model"] = model_schema()
    no_batch = {"tuned_model": {"type": "null"}, "top_k": {"const": 3}, "output_format": {"const": "csv"},
                "text_column": {"type": "null"}}
    training = {"dataset_id": {"type": "string"}, "quick": {"const": True}, "sweep": {"const": True}, **no_batch}
    train_kind = {"anyOf": [{"not": {"required": ["kind"]}}, {"properties": {"kind": {"const": "train"}}}],
                  "required": ["dataset_id"],
                  "properties": {"budget_seconds": {"type": "null"}, "budget_usd": {"type": "null"},
                                 "exhaustive": {"const": False}, **training}}
    train = [{"properties": {"strategy": {"const": n}, "params": params[n]}, "required": ["strategy"]} for n in names]
    # no strategy: the default of the dataset's task (services.jobs.resolved); its parameters are checked then
    train.append({"not": {"required": ["strategy"]}, "properties": {"params": {"type": "object"}}})
    compare = {"required": ["kind", "strategies", "dataset_id"],
               "properties": {"kind": {"const": "compare"}, "processes": {"const": 1},
                              "strategies": {"type": "array", "minItems": 1, "items": {"enum": names}},
                              "strategy_params": {"type": "object", "properties": params}, **training}}
    empty = {type(None): {"type": "null"}, list: {"maxItems": 0}, dict: {"maxProperties": 0}, bool: {"const": False}}
    bench = {"required": ["kind"],
             "properties": {"kind": {"const": BENCH}, "processes": {"const": 1}, **{f: empty[type(v)] for f, v in NOT_ON_BENCH.items()},
                            **no_batch}}
    batch = {"required": ["kind", "dataset_id", "tuned_model"],
             "properties": {"kind": {"const": BATCH}, "processes": {"const": 1}, "dataset_id": {"type": "string"}, "tuned_model": {"type": "string"},
                            "quick": {"const": True}, "sweep": {"const": True},
                            **{f: empty[type(v)] for f, v in NOT_ON_BATCH.items() if type(v) in empty and v is not True}}}
    schema["anyOf"] = [{"allOf": [train_kind, {"anyOf": train}]}, compare, bench, batch]


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_document)

    kind: Literal["train", "compare", "bench-hardware", "batch-predict"] = Field(
        "train", description="train: one strategy on a dataset; compare: several on the same split, one "
                             "recommended; bench-hardware: measure the worker's machine (no dataset); "
                             "batch-predict: label every text of a file (`dataset_id`) with a tuned model")
    # required by train and compare jobs (_for_kind); a benchmark has none
    dataset_id: str | None = Field(default=None, validate_default=True)
    test_dataset_id: str | None = None
    model: str = "minilm"
    strategy: str | None = None                 # train: None = the default of the dataset's task
    strategies: list[str] = Field(default_factory=list)          # compare jobs
    params: dict[str, object] = Field(default_factory=dict)     # train: the strategy's overrides
    strategy_params: dict[str, dict[str, object]] = Field(default_factory=dict)   # compare
    # strict: the document says integer / boolean, so `true` is not a seed nor `0` an auto_fit
    limit: json_int(gt=0) | None = None
    seed: JsonInt = 0
    suffix: str | None = Field(default=None, max_length=40)
    model_name: ModelName | None = Field(default=None, description=(
        "train jobs: what people will call the tuned model (1-120 printable characters, trimmed; renamed "
        "later with PATCH /api/v1/models/{id}); default \"<dataset name> — <strategy>\""))
    auto_fit: bool = Field(default=False, strict=True)
    # train jobs: data-parallel processes (torchrun; gloo on CPU, NCCL on GPUs). `batch_size` stays
    # the global batch, so a run on N processes sees the same batches as on one (training/distributed.py).
    processes: json_int(ge=1, le=MAX_PROCESSES) = Field(1, description=(
        "train jobs: train on this many data-parallel processes (torchrun; one GPU each on a GPU worker, "
        "the worker's CPU threads shared out on CPU); the batch size stays the global batch. Only "
        "strategies with a training loop take more than 1"))
    metadata: dict[str, str] | None = None
    # compare jobs: what the comparison may spend (whichever limit comes first), and whether every
    # candidate runs to the end instead of the weak ones being stopped early
    budget_seconds: BudgetSeconds | None = Field(
        default=None, description="compare jobs: stop the comparison after this many wall seconds (at most 7 days)")
    budget_usd: BudgetUsd | None = Field(
        default=None, description="compare jobs: stop the comparison once it has used this many dollars of compute")
    exhaustive: bool = Field(default=False, strict=True,
                             description="compare jobs: run every candidate to the end instead of stopping "
                                         "the ones that fall behind early")
    # bench-hardware jobs: what `tunelab bench hardware [--quick]` measures, on the worker
    quick: bool = Field(default=True, strict=True,
                        description="bench-hardware jobs: fewer repetitions and only the default model's quick "
                                    "rows (about 90 s); false: every catalog model, more precise (about 15 min)")
    sweep: bool = Field(default=True, strict=True,
                        description="bench-hardware jobs: also time short real training runs of the models; "
                                    "false: the device figures only (matmul, memory, disk; about 15 s)")

    # batch-predict jobs: the tuned model that labels the file's texts, and what the output holds
    tuned_model: str | None = Field(default=None, min_length=1, max_length=200, validate_default=True,
                                    description="batch-predict jobs: the tuned model (ft:…) that labels the texts")
    top_k: json_int(ge=1, le=20) = Field(3, description="batch-predict jobs: how many labels (with their "
                                                         "probabilities) each output row lists, 1 to 20")
    output_format: Literal["csv", "jsonl"] = Field("csv", description="batch-predict jobs: the output file's format")
    text_column: str | None = Field(default=None, min_length=1, max_length=200,
                                    description="batch-predict jobs: the column (or JSON field) holding the "
                                                "texts; detected when left out")

    @field_validator("dataset_id", *(f for f in NOT_ON_BENCH if f != "dataset_id"), "quick", "sweep",
                     *BATCH_DEFAULTS)
    @classmethod
    def _for_kind(cls, value, info: ValidationInfo):
        kind = info.data.get("kind")            # absent: the kind itself was refused
        if kind == BENCH and info.field_name in NOT_ON_BENCH and value != NOT_ON_BENCH[info.field_name]:
            raise ValueError(f"`{info.field_name}` {TRAINING_ON_BENCH}")
        if kind == BATCH:
            if info.field_name in NOT_ON_BATCH and value != NOT_ON_BATCH[info.field_name]:
                raise ValueError(f"`{info.field_name}` {TRAINING_ON_BATCH}")
            if info.field_name in ("dataset_id", "tuned_model") and value is None:
                raise PydanticKnownError("missing")
        elif kind is not None and info.field_name in BATCH_DEFAULTS and value != BATCH_DEFAULTS[info.field_name]:
            raise ValueError(f"`{info.field_name}` {BATCH_ON_OTHERS}")
        if kind in ("train", "compare"):
            if info.field_name == "dataset_id" and value is None:
                raise PydanticKnownError("missing")
            if info.field_name in ("quick", "sweep") and value is not True:
                raise ValueError(BENCH_ON_TRAINING)
        return value

    @model_validator(mode="after")
    def _one_or_many(self):
        if self.processes != 1 and self.kind != "train":
            raise ValueError(PROCESSES_ON_OTHERS)
        if self.kind == "compare":
            if not self.strategies:
                raise ValueError("a compare job needs `strategies`, e.g. [\"zero-shot\", \"lora\"]")
            self.strategy = None
        elif self.kind == "train" and self.has_budget_fields():
            raise ValueError(BUDGET_ON_TRAIN)
        return self

    @property
    def is_bench(self) -> bool:
        return self.kind == BENCH

    @property
    def is_batch(self) -> bool:
        return self.kind == BATCH

    def has_budget_fields(self) -> bool:
        return self.budget_seconds is not None or self.budget_usd is not None or self.exhaustive

    def budget(self):
        """The engine's Budget for a compare job (None: no limit)."""
        if self.budget_seconds is None and self.budget_usd is None:
            return None
        from ..engine.budget import Budget

        return Budget(seconds=self.budget_seconds, usd=self.budget_usd)


class ChildSpec(BaseModel):
    """The job spec resolved to files, as the job process receives it (no database access)."""
    model_config = ConfigDict(extra="forbid")

    job: JobSpec
    train_file: str | None = None          # none for a bench-hardware job
    test_file: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    model_dir: str | None = None           # batch-predict: the tuned model's folder, decrypted by the worker
    work_dir: str
    out_dir: str
