"""The default run name: a UTC timestamp, suffixed -2, -3, ... while that name is taken."""

from __future__ import annotations

from datetime import UTC, datetime

from cs336_basics.training.run_name import timestamp_name


def test_timestamp_names_and_suffixes():
    now = datetime(2026, 12, 1, 21, 5, 9, tzinfo=UTC)
    assert timestamp_name(now, taken=lambda name: False) == "20261201-210509"
    taken = {"20261201-210509", "20261201-210509-2"}
    assert timestamp_name(now, taken=taken.__contains__) == "20261201-210509-3"
