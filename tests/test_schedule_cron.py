"""The edge's cron and time zone checks, held against Prefect's own (croniter, zoneinfo):
whatever the edge accepts, Prefect's CronSchedule accepts too."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prefect._vendor.croniter import CroniterBadDateError, croniter
from prefect.server.schemas.schedules import CronSchedule

from edge.schedules import cron
from edge.schedules.cron import cron_error, timezone_error

ACCEPTED = [
    "* * * * *", "*/5 * * * *", "0 9 * * mon-fri", "0 0 1 jan *", "0 0 * * 7", "0 0 * * 0-7",
    "1-5/2 * * * *", "0 0 * * sun,sat", "0 0 * JAN-MAR *", "00 00 * * *", "1,2,3 * * * *",
    "@daily", "@hourly", "@weekly", "@monthly", "@yearly", "@annually", "@midnight",
    " 30 6 * * * ",
    "0 0 29 2 *", "0 0 31 4,7 *", "0 0 31 */2 *", "0 0 */30 2 *",
]  # fmt: skip
REFUSED = {
    "61 * * * *": "minute", "* 24 * * *": "hour", "* * 0 * *": "day of month",
    "* * 32 * *": "day of month", "* * * 13 *": "month", "* * * * 8": "day of week",
    "*/0 * * * *": "step 0", "* * * *": "4 fields", "* * * * * *": "6 fields",
    "a * * * *": "minute", ",1 * * * *": "minute", "@reboot": "macro", "": "0 fields",
    "H * * * *": "minute", "R * * * *": "minute", "5-1 * * * *": "backwards",
    "0 9 31 2 *": "never", "0 0 30 2 *": "never", "0 0 31 4,6,9,11 *": "never",
    "0 0 30,31 feb */2": "never", "0 0 30 2 mon": "never",
}  # fmt: skip


def prefect_accepts(expression: str) -> bool:
    """Prefect's CronSchedule takes it, and its croniter (which computes the runs) finds
    a next run: Prefect itself takes crons that never run (`0 0 30 2 *`)."""
    try:
        CronSchedule(cron=expression, timezone="UTC")
        croniter(expression.strip(), datetime(2025, 1, 1), day_or=True).get_next(datetime)
    except (ValueError, CroniterBadDateError):
        return False
    return True


@pytest.mark.parametrize("expression", ACCEPTED)
def test_the_edge_accepts_standard_cron_as_prefect_does(expression: str) -> None:
    assert cron_error(expression) is None
    assert prefect_accepts(expression)


@pytest.mark.parametrize(("expression", "says"), REFUSED.items())
def test_the_edge_refuses_bad_cron_saying_which_field(expression: str, says: str) -> None:
    problem = cron_error(expression)
    assert problem is not None and says in problem


def test_what_the_edge_refuses_beyond_prefect_is_croniters_extensions_only() -> None:
    """A documented subset: croniter's `L`, seconds fields, `a/n` and reversed ranges."""
    for expression in ("0 0 L * *", "0 0 * * * *", "5/10 * * * *", "0 0 * * fri-mon"):
        assert cron_error(expression) is not None and prefect_accepts(expression)


#: Each field's bounds, stretched by one on either side so that some values are out.
_BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
_NAMES = [[], [], [], ["jan", "jun", "dec"], ["sun", "wed", "sat"]]


def _field(position: int) -> st.SearchStrategy[str]:
    low, high = _BOUNDS[position]
    number = st.integers(low - 1, high + 1).map(str)
    value = st.one_of(number, st.sampled_from(_NAMES[position] or ["0"]))
    item = st.one_of(
        st.just("*"),
        value,
        st.tuples(value, value).map("-".join),
    )
    step = st.one_of(st.just(""), st.integers(0, high + 1).map(lambda n: f"/{n}"))
    return st.tuples(st.lists(st.tuples(item, step).map("".join), min_size=1, max_size=3)
                     .map(",".join))  # fmt: skip


_EXPRESSION = st.tuples(*(_field(n) for n in range(5))).map(
    lambda fields: " ".join(part for (part,) in fields)
)


@settings(max_examples=300, deadline=None)
@given(_EXPRESSION)
def test_anything_the_edge_accepts_prefect_accepts(expression: str) -> None:
    if cron_error(expression) is None:
        assert prefect_accepts(expression), expression


def test_time_zones_are_prefects_iana_names() -> None:
    assert timezone_error("Europe/Oslo") is None and timezone_error("UTC") is None
    for bad in ("utc", "Mars/Olympus_Mons", "Europe/Oslo ", "+01:00"):
        problem = timezone_error(bad)
        assert problem is not None and "IANA" in problem
        with pytest.raises(ValueError, match="Invalid timezone"):
            CronSchedule(cron="* * * * *", timezone=bad)


def test_without_a_time_zone_database_the_check_is_left_to_prefect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As in a Worker whose Pyodide has no tzdata: then Prefect's 422 names the field
    (tests/test_prefect_schedules.py)."""
    monkeypatch.setattr(cron, "_timezones", lambda: frozenset())
    assert timezone_error("Mars/Olympus_Mons") is None
