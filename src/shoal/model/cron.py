"""Cron schedules as a CronJob's ``spec.schedule`` reads them.

The standard five fields (minute, hour, day of month, month, day of week), with
``*``, ``?``, lists, ranges, steps and month and weekday names, and the
descriptors ``@yearly``, ``@annually``, ``@monthly``, ``@weekly``, ``@daily``,
``@midnight``, ``@hourly`` and ``@every <duration>``, as the parser Kubernetes
uses (robfig/cron's standard parser). When both day fields are restricted a day
matches either of them (cron's rule); when one is ``*`` only the other counts.
Times are evaluated in a time zone (``spec.timeZone``, an IANA name; UTC if unset).
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from dataclasses import dataclass

_MONTHS = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6,
                 "ns": 1e-9}
MAX_YEARS_SEARCHED = 5
"""A schedule that never matches (``0 0 30 2 *``) stops the search after this many years."""


class CronError(ValueError):
    """The schedule cannot be parsed; the message says why, as Kubernetes words it."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Field("minute", 0, 59), _Field("hour", 0, 23), _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS), _Field("day of week", 0, 6, _DAYS),
)


def _value(text: str, f: _Field) -> int:
    if f.names and text.lower() in f.names:
        return f.names[text.lower()]
    if not text.isdigit():
        raise CronError(f"failed to parse int from {text}")
    v = int(text)
    if f.name == "day of week" and v == 7:
        return 0
    return v


def _parse_field(text: str, f: _Field) -> tuple[frozenset[int], bool]:
    """The values a field allows, and whether it was a star (``*`` or ``?``)."""
    values: set[int] = set()
    star = False
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, _, step_text = part.partition("/")
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"invalid step in {text!r}")
            step = int(step_text)
        if part in ("*", "?"):
            low, high = f.low, f.high
            star = star or step == 1
        elif "-" in part:
            a, _, b = part.partition("-")
            low, high = _value(a, f), _value(b, f)
        else:
            low = _value(part, f)
            high = f.high if step > 1 else low
        if low < f.low or high > f.high + (1 if f.name == "day of week" else 0):
            raise CronError(f"{f.name} out of range ({f.low}-{f.high}): {part}")
        if low > high:
            raise CronError(f"beginning of range ({low}) beyond end of range ({high}): {part}")
        values.update(v % 7 if f.name == "day of week" else v for v in range(low, high + 1, step))
    return frozenset(values), star


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: :meth:`next_after` gives the next time it fires."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_star: bool
    weekdays_star: bool
    every: float | None = None
    """``@every``: a fixed period in seconds instead of the fields."""

    def _day_matches(self, d: datetime.datetime) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow

    def next_after(self, after: float, tz: datetime.tzinfo = datetime.UTC) -> float | None:
        """The first time strictly after ``after`` (epoch seconds) the schedule fires."""
        if self.every is not None:
            return after + self.every
        t = datetime.datetime.fromtimestamp(after, tz).replace(second=0, microsecond=0)
        t = t + datetime.timedelta(minutes=1)
        limit = t.year + MAX_YEARS_SEARCHED
        while t.year <= limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + datetime.timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + datetime.timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0) + datetime.timedelta(hours=1)
                continue
            if t.minute not in self.minutes or t.timestamp() <= after:
                # (the second test: a wall time repeated when clocks go back fired already)
                t = t + datetime.timedelta(minutes=1)
                continue
            return t.timestamp()
        return None

    def times_between(self, after: float, until: float, tz: datetime.tzinfo = datetime.UTC,
                      most: int = 100) -> list[float]:
        """Fire times in ``(after, until]``, at most ``most`` of them (the latest kept)."""
        out: list[float] = []
        t = self.next_after(after, tz)
        while t is not None and t <= until:
            out.append(t)
            if len(out) > most:
                out.pop(0)
            t = self.next_after(t, tz)
        return out


def _parse_duration(text: str) -> float:
    text = text.strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise CronError(f"failed to parse duration @every {text}")
    if total <= 0:
        raise CronError(f"@every {text}: the duration must be positive")
    return total


def parse(schedule: str) -> Schedule:
    """Parse ``schedule``; raise :class:`CronError` when it is not a valid one."""
    text = schedule.strip()
    if not text:
        raise CronError("empty spec string")
    if text.startswith("@every "):
        return Schedule(frozenset(), frozenset(), frozenset(), frozenset(), frozenset(),
                        True, True, every=_parse_duration(text[len("@every "):]))
    if text.startswith("@"):
        if text not in _DESCRIPTORS:
            raise CronError(f"unrecognized descriptor: {text}")
        text = _DESCRIPTORS[text]
    fields = text.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: {fields}")
    parsed = [_parse_field(t, f) for t, f in zip(fields, _FIELDS, strict=True)]
    return Schedule(parsed[0][0], parsed[1][0], parsed[2][0], parsed[3][0], parsed[4][0],
                    days_star=parsed[2][1], weekdays_star=parsed[4][1])


def time_zone(name: str | None) -> datetime.tzinfo:
    """The zone a CronJob's ``spec.timeZone`` names (UTC when unset); CronError if unknown."""
    if not name:
        return datetime.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise CronError(f"unknown time zone {name}") from e
