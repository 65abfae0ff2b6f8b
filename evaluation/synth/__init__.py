"""Seeded synthetic county: persons with latent histories and the records six
agencies hold about them (see evaluation/DATA.md and evaluation/SYNTH.md).

Modules: ``names`` (name pools by race/ethnicity), ``places`` (streets, cities,
phones), ``persons`` (drawing persons and households), ``population`` /
``population_history`` (the population, address and phone histories), ``clock``
(US Eastern time stamps), ``dating`` (a county moved to another year), ``corrupt`` (typos, phonetic variants, nicknames, DOB
errors), ``sources`` (how each agency records a person), ``incidents`` (911
calls with partial subjects, and resolver queries from them), ``needs`` /
``needs_catalogue`` (latent per-person needs), ``context`` (context items and
consents), ``feedback`` (hidden item relevance per incident, responder feedback),
``county`` (orchestration, file writing), ``messiness`` (within-person variation rates),
``bias`` (known bias injected against one group for the fairness audit; SYNTH.md §8).
``gecko_population`` / ``gecko_sets`` make the two gecko-syndata benchmark sets of
evaluation/data/external/ (DATA.md), corrupted by another library than ``corrupt``.
"""
