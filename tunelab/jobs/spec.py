"""What a job runs: validated at the API boundary, stored with the job, handed to the child."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


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
BUDGET_ON_TRAIN = ("`budget_seconds`, `budget_usd` and `exhaustive` are for compare jobs (kind \"compare\"); "
                   "a train job runs its one strategy to the end")
# strict: a JSON number (3 or 2.5), not `true` nor "600"; NaN and infinities are refused
BudgetSeconds = Annotated[float, Field(gt=0, le=MAX_BUDGET_SECONDS, strict=True, allow_inf_nan=False)]
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
    """What the service refuses, in the OpenAPI document and not only in code (check_spec and
    _one_or_many): a train job names a registered strategy and that strategy's hyperparameters; a
    compare job names at least one; a model is a catalog name or an uploaded model. Fields a kind
    ignores (a train job's `strategies`, a compare job's `params`) stay unconstrained there. A
    comparison's budget and `exhaustive` are refused on a train job: null / false there."""
    names, params = strategy_params_schemas()
    props = schema["properties"]
    props["model"] = model_schema()
    train_kind = {"anyOf": [{"not": {"required": ["kind"]}}, {"properties": {"kind": {"const": "train"}}}],
                  "properties": {"budget_seconds": {"type": "null"}, "budget_usd": {"type": "null"},
                                 "exhaustive": {"const": False}}}
    train = [{"properties": {"strategy": {"const": n}, "params": params[n]}, "required": ["strategy"]} for n in names]
    # no strategy: the default of the dataset's task (services.jobs.resolved); its parameters are checked then
    train.append({"not": {"required": ["strategy"]}, "properties": {"params": {"type": "object"}}})
    compare = {"required": ["kind", "strategies"],
               "properties": {"kind": {"const": "compare"},
                              "strategies": {"type": "array", "minItems": 1, "items": {"enum": names}},
                              "strategy_params": {"type": "object", "properties": params}}}
    schema["anyOf"] = [{"allOf": [train_kind, {"anyOf": train}]}, compare]


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_document)

    kind: Literal["train", "compare"] = "train"
    dataset_id: str
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
    auto_fit: bool = Field(default=False, strict=True)
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

    @model_validator(mode="after")
    def _one_or_many(self):
        if self.kind == "compare":
            if not self.strategies:
                raise ValueError("a compare job needs `strategies`, e.g. [\"zero-shot\", \"lora\"]")
            self.strategy = None
        elif self.has_budget_fields():
            raise ValueError(BUDGET_ON_TRAIN)
        return self

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
    train_file: str
    test_file: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    work_dir: str
    out_dir: str
