"""The steward review domain, without Flask: the queue of pairs (queue), decisions, splits, merges and undo
(decisions), and the record moves under them (moves). The API and the pages over it are in api/web."""
