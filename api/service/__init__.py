"""The service core, without Flask: the store and its audit log, keys, ingest, retention, the change feed, and the
work each HTTP endpoint does (api/web calls it; the CLI calls some of it directly)."""
