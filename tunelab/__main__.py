"""`python -m tunelab`: the same as the `tunelab` console script (the CLI with the server's commands)."""

import sys

from .server import main

sys.exit(main())
