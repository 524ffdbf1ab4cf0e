"""Checks of a schedule's `cron` and `timezone` at the edge, before anything is made.

The cron check is hand-written on purpose: Prefect checks cron strings with croniter,
which the Worker cannot carry (it is not among the edge's dependencies, and brings
python-dateutil and pytz). The edge accepts the standard five-field crontab(5) syntax
(numbers, `*`, ranges, steps, lists, month and weekday names) and the `@daily`-style
macros: a subset of what croniter takes, so anything accepted here Prefect accepts too
(tests/test_schedule_cron.py holds the two against each other). Prefect still checks
at create, and a refusal of its own is answered with the same 422 (`edge.schedules.service`).
"""

from __future__ import annotations

import functools
import re

MACROS = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class _Field:
    def __init__(self, name: str, low: int, high: int, names: tuple[str, ...] = ()) -> None:
        self.name = name
        self.low = low
        self.high = high
        # Names count from the field's first value: jan = 1, sun = 0.
        self.names = {label: low + n for n, label in enumerate(names)}


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 7, _WEEKDAYS),  # 7 is Sunday again, as in crontab(5)
)
_ITEM = re.compile(r"^(?P<range>\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(?P<step>[0-9]+))?$")


def cron_error(expression: str) -> str | None:
    """What is wrong with a cron expression, or None when the edge accepts it."""
    text = expression.strip().lower()
    if text.startswith("@"):
        return None if text in MACROS else f"unknown macro {expression!r}; use {_macros()}"
    parts = text.split()
    if len(parts) != len(_FIELDS):
        return (
            f"{expression!r} has {len(parts)} fields; a cron expression has 5 "
            "(minute hour day-of-month month day-of-week), or is one of " + _macros()
        )
    for part, field in zip(parts, _FIELDS, strict=True):
        for item in part.split(","):
            if problem := _item_error(item, field):
                return f"{field.name} field {part!r}: {problem}"
    return _never_fires(parts)


#: The most days each month can have (February's 29th comes in leap years).
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _never_fires(parts: list[str]) -> str | None:
    """Whether the days of the month can never be in the months given (`30 2`).
    Whatever the day of week says: crontab(5) would then run on those weekdays, but
    Prefect's croniter finds no next run at all, so the schedule would never run."""
    dom, month = parts[2], parts[3]
    if dom.startswith("*"):  # the 1st is in every month
        return None
    days = _values(dom, _FIELDS[2])
    months = _values(month, _FIELDS[3])
    if any(day <= _MONTH_DAYS[m - 1] for m in months for day in days):
        return None
    return f"day of month {dom!r} is in none of the months {month!r}: it would never run"


def _values(part: str, field: _Field) -> set[int]:
    """The values a field (checked already) stands for."""
    found: set[int] = set()
    for item in part.split(","):
        match = _ITEM.match(item)
        assert match is not None  # checked by _item_error first
        if match["range"] == "*":
            low, high = field.low, field.high
        else:
            bounds = [_value(bound, field) or 0 for bound in match["range"].split("-")]
            low, high = bounds[0], bounds[-1]
        found.update(range(low, high + 1, int(match["step"] or 1)))
    return found


def _item_error(item: str, field: _Field) -> str | None:
    match = _ITEM.match(item)
    if match is None:
        return f"{item!r} is not a value, a range, a step or *"
    step = match["step"]
    if step is not None and not 1 <= int(step) <= field.high:
        return f"step {step} is outside 1-{field.high}"
    if match["range"] == "*":
        return None
    bounds = match["range"].split("-")
    values = []
    for bound in bounds:
        value = _value(bound, field)
        if value is None:
            return f"{bound!r} is not a valid {field.name} ({field.low}-{field.high})"
        values.append(value)
    if len(values) == 2 and values[0] > values[1]:
        return f"the range {item!r} runs backwards"
    if len(values) == 1 and step is not None:
        return f"{item!r}: a step needs a range or * before it"
    return None


def _value(text: str, field: _Field) -> int | None:
    if text.isdigit() and len(text) <= 2:
        number = int(text)
        return number if field.low <= number <= field.high else None
    return field.names.get(text)


def _macros() -> str:
    return ", ".join(sorted(MACROS))


def timezone_error(name: str) -> str | None:
    """What is wrong with an IANA time zone name, or None when it is one (or when this
    runtime has no time zone database to tell: then Prefect's check at create decides)."""
    zones = _timezones()
    if not zones or name in zones:
        return None
    return f"{name!r} is not an IANA time zone name (such as Europe/Oslo or UTC)"


@functools.cache
def _timezones() -> frozenset[str]:
    """The IANA names the runtime knows, as Prefect's own check reads them. Empty in a
    Worker without the tz database (Pyodide ships it as a separate package): read on
    first use, never at import."""
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())
