"""The decision log (layer 3): one row per routed request and its feedback, as the gateway writes them and the
learning loop reads them — the tables (`schema`), their migrations (`migrations`), the SQLite / PostgreSQL store and
its background writer (`store`) and the pre-aggregated rollups the dashboard reads (`rollups`).

It may import `radialrouter.core` and `radialrouter.data` only (SQLAlchemy Core besides); never `radialrouter.serve`,
which writes through it, nor `radialrouter.learning`, which reads it.
"""
