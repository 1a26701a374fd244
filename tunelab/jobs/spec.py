"""What a job runs: validated at the API boundary, stored with the job, handed to the child."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["train", "compare"] = "train"
    dataset_id: str
    test_dataset_id: str | None = None
    model: str = "minilm"
    strategy: str | None = "lora"
    strategies: list[str] = Field(default_factory=list)          # compare jobs
    params: dict[str, object] = Field(default_factory=dict)     # train: the strategy's overrides
    strategy_params: dict[str, dict[str, object]] = Field(default_factory=dict)   # compare
    limit: int | None = Field(default=None, gt=0)
    seed: int = 0
    suffix: str | None = Field(default=None, max_length=40)
    auto_fit: bool = False
    metadata: dict[str, str] | None = None

    @model_validator(mode="after")
    def _one_or_many(self):
        if self.kind == "compare":
            if not self.strategies:
                raise ValueError("a compare job needs `strategies`, e.g. [\"zero-shot\", \"lora\"]")
            self.strategy = None
        elif not self.strategy:
            raise ValueError("a train job needs `strategy`")
        return self


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
