"""The exit statuses of every `tunelab` command, in one table. Scripts and the service rely on them.

Two statuses share a number where the meaning lines up: 1 is "the data, the request or a check
failed", 2 is "the command cannot work as given".
"""

EXIT_OK = 0
EXIT_DATA = 1           # local: the data has errors
EXIT_ERROR = 1          # remote: the server refused the request (or could not be reached), or the
                        # watched job failed; operator: a check found problems, a billing operation failed
EXIT_CONFIG = 2         # local: the configuration cannot work (unknown model or strategy, bad
                        # hyperparameters, does not fit in memory, qlora without CUDA); operator: refused as given
EXIT_AUTH = 2           # remote: no --server/--api-key, or the key was refused (401/403)
EXIT_CANCELLED = 3      # remote: the watched job was cancelled
EXIT_INTERRUPTED = 130  # remote: Ctrl-C while watching (the job goes on)

# A watched job's final status as the command's exit status.
JOB_EXIT = {"succeeded": EXIT_OK, "failed": EXIT_ERROR, "cancelled": EXIT_CANCELLED}
