"""The committed default models, installed with Briefing as a data package of their own.

`models/` stays at the top of the repository, where the project's layout puts trained artifacts and
their cards; installing Briefing (`pip install .`, or the editable install of `make`) carries it as
the package `models`, so the defaults are found from any working directory. A deployment that keeps
its own models passes `--model FILE` / `--models DIR` instead.
"""

from __future__ import annotations

from pathlib import Path

DIRECTORY = Path(__file__).resolve().parent
MATCHER = DIRECTORY / "matcher.json"      # the Splink matcher `make model` trains (MATCHER.md is its card)
RANKER = DIRECTORY / "ranker.json"        # the ranking scorecard `make ranker` trains (RANKER.md is its card)
