"""Briefing's item side: context items and their vocabularies, the access policy, ranking rules and the learned ranker."""
