"""The names of the benchmarks' variants: bench.py writes them into its results, report.py
reads them back (one definition for both)."""

SERIALIZED = "record_event serialized"
SERIALIZED_QUIET = "record_event serialized notify=off"
CONCURRENT = "record_event concurrent"
BATCH_SERIALIZED = "record_events serialized"
BATCH_CONCURRENT = "record_events concurrent"
LOCK = "LOCK TABLE + NOTIFY + INSERT"
LOCK_QUIET = "LOCK TABLE + INSERT, no NOTIFY"
UNORDERED = "unordered INSERT"
WAKE_SERIALIZED = "serialized (the writer's NOTIFY)"
WAKE_CONCURRENT = "concurrent (the horizon publisher's NOTIFY)"
CLAIM = "claim loop (biomero)"
NAIVE = "naive loop (max+1, PK)"
MODES = ("serialized", "concurrent")


def select_notifications(mode):
    return f"select_notifications ({mode})"


def plain_select(mode):
    return f"plain SELECT ({mode})"
