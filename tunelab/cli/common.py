"""Helpers the command modules share: stderr messages, JSON output, the `--set KEY=VALUE`
splitter, the server's database (operator commands) and the SDK client (remote commands)."""

from __future__ import annotations

import functools
import json
import sys

from .errors import UsageError
from .exits import EXIT_AUTH


def say(message: str) -> None:
    print(message, file=sys.stderr)


def dump(obj) -> None:
    """Print JSON: SDK objects (pydantic models) and lists of them as the API sent them."""
    if isinstance(obj, list):
        obj = [o.model_dump(mode="json") if hasattr(o, "model_dump") else o for o in obj]
    elif hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    print(json.dumps(obj, indent=2, default=str))


# ---- --set ------------------------------------------------------------------------------------
# The command line only splits `--set` items; the library validates the hyperparameters
# (tunelab.strategies.parse_params, which also takes the items as "key=value" strings).
def split_set(items: list[str], json_values: bool = False) -> dict:
    """KEY=VALUE items as a dict. With json_values, VALUE is read as JSON when it parses
    (3, 1e-4, true, [1,2]), else kept as a string."""
    params: dict = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--set takes KEY=VALUE, got {item!r}")
        if json_values:
            try:
                value = json.loads(value)
            except ValueError:
                pass
        params[key.strip()] = value
    return params


def split_set_by_strategy(items: list[str]) -> dict[str, list[str]]:
    """STRATEGY.KEY=VALUE items (compare) as {strategy: ["KEY=VALUE", ...]}."""
    params: dict = {}
    for item in items:
        name, dot, rest = item.partition(".")
        if not dot or "=" not in rest:
            raise UsageError(f"--set for compare takes STRATEGY.KEY=VALUE, got {item!r}")
        params.setdefault(name, []).append(rest)
    return params


# ---- the server's database (operator commands, `tunelab serve`) -----------------------------------
def open_database():
    """(Settings, Database) from TUNELAB_* settings, migrated to the current schema."""
    from ..db import Database, migrate
    from ..settings import Settings

    settings = Settings()
    db = Database(settings.db_url)
    migrate(db.engine)
    return settings, db


# ---- remote mode --------------------------------------------------------------------------------
def remote(fn):
    """Give the command a Client for --server/--api-key (`fn(client, args)`); what goes wrong is
    turned into messages and exit statuses by errors.guarded."""
    @functools.wraps(fn)
    def run(args) -> int:
        from ..sdk import Client

        if not args.server:
            raise UsageError("this command talks to a tunelab server: give --server URL (or set TUNELAB_SERVER)",
                             EXIT_AUTH)
        if not args.api_key:
            raise UsageError("this command needs your API key: give --api-key KEY (or set TUNELAB_API_KEY)",
                             EXIT_AUTH)
        with Client(args.server, args.api_key) as client:
            return fn(client, args)
    return run
