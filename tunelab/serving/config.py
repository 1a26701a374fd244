"""What one model server serves: written by the supervisor as JSON into the server's run folder,
read by the server process (serving/process.py) at start. Paths here are the supervisor's own
(built from the database and the run folder), never a request's."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

KINDS = ("generate", "classify")
ENGINES = ("torch", "onnx", "onnx-int8")


@dataclass
class ServedModel:
    name: str        # what clients send as `model`: a tuned model id ("ft:..."), or a catalog name for a bare base
    folder: str      # plaintext folder: a tuned artifact (manifest.json inside) or a transformers model folder


@dataclass
class ServerConfig:
    socket: str                  # Unix socket path the server listens on
    kind: str                    # "generate" | "classify"
    models: list[ServedModel] = field(default_factory=list)
    base: str | None = None      # generate: the base folder every adapter loads onto (one copy in memory)
    base_name: str | None = None # served name of the bare base (None: not served on its own)
    engine: str = "torch"        # "torch" | "onnx" | "onnx-int8" (classify only)
    batch_window_ms: float = 5.0 # classify micro-batching window; 0 = off
    max_batch: int = 32
    max_adapters: int = 8        # adapters kept loaded (LRU) before the least recently used is unloaded
    threads: int = 0             # torch threads (0: torch's default)
    work: str = ""               # a writable folder for the server (ONNX exports, caches)
    max_concurrent: int = 8      # generations running at once; one more answers ServerBusy (429)
    max_body_bytes: int = 8 * 1024 * 1024   # request bodies over this are refused before being read

    def __post_init__(self) -> None:
        self.models = [m if isinstance(m, ServedModel) else ServedModel(**m) for m in self.models]
        self.validate()

    def validate(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind must be one of {', '.join(KINDS)} (got {self.kind!r})")
        if self.engine not in ENGINES:
            problems.append(f"engine must be one of {', '.join(ENGINES)} (got {self.engine!r})")
        if self.kind == "generate" and self.engine != "torch":
            problems.append("generative servers run on the torch engine only")
        if self.kind == "classify" and len(self.models) != 1:
            problems.append(f"a classify server serves exactly one model (got {len(self.models)})")
        if self.kind == "generate" and not self.models and not (self.base and self.base_name):
            problems.append("a generate server needs models, or a base with a base_name")
        if not self.socket:
            problems.append("socket is empty")
        if self.batch_window_ms < 0 or self.max_batch < 1 or self.max_adapters < 1 or self.max_concurrent < 1:
            problems.append("batch_window_ms must be >= 0; max_batch, max_adapters, max_concurrent >= 1")
        if self.threads < 0 or self.max_body_bytes < 1:
            problems.append("threads must be >= 0 and max_body_bytes >= 1")
        names = [m.name for m in self.models] + ([self.base_name] if self.base_name else [])
        if len(set(names)) != len(names):
            problems.append(f"served names repeat: {names}")
        if problems:
            raise ValueError("invalid server config: " + "; ".join(problems))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ServerConfig":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("invalid server config: not a JSON object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"invalid server config: unknown fields {sorted(unknown)}")
        return cls(**data)
