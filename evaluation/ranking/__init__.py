"""Ranking evaluation: the county as ranking data (`county`), NDCG / MAP / safety-pin recall of rules, model and
both on held-out incidents (`evaluate`), and the ranker's model card (`card`)."""
