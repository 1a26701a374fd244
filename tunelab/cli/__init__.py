"""The `tunelab` command line. commands.py: the parser and the local engine's commands (inspect, train,
compare, predict); remote.py: a server's datasets, jobs and models through the SDK; billing.py:
credit, usage and estimates (remote) and `admin billing` (operator); admin.py: `worker` and
`admin` (operator); generative.py: generative models. Shared: exits.py (the exit statuses),
errors.py (library errors -> message and status), common.py (--set, JSON output, database, client).

The `tunelab` console script enters through tunelab.server, which adds `serve` and `demo`."""

from .commands import (COMMANDS, EXIT_CONFIG, EXIT_DATA, EXIT_OK, build_parser, cmd_compare, cmd_inspect, cmd_models,
                   cmd_predict, cmd_strategies, cmd_train, main, render_table)

__all__ = ["COMMANDS", "EXIT_CONFIG", "EXIT_DATA", "EXIT_OK", "build_parser", "cmd_compare", "cmd_inspect",
           "cmd_models", "cmd_predict", "cmd_strategies", "cmd_train", "main", "render_table"]
