"""`python -m tunelab.cli`: the command line without the server's commands."""

import sys

from .commands import main

sys.exit(main())
