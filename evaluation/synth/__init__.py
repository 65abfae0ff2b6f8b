"""Seeded synthetic county: persons with latent histories and the records six
agencies hold about them (see evaluation/DATA.md and evaluation/SYNTH.md).

Modules: ``names`` (name pools by race/ethnicity), ``places`` (streets, cities,
phones), ``population`` / ``population_history`` (persons, households, address
and phone histories), ``corrupt`` (typos, phonetic variants, nicknames, DOB
errors), ``sources`` (how each agency records a person), ``county``
(orchestration, file writing), ``messiness`` (within-person variation rates).
"""
