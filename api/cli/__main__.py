"""`python -m api.cli ARGS`: the same as the `briefing ARGS` console script (`api.cli.main:main`)."""

import sys

from api.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
