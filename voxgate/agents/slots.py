"""Slot value parsers for spoken answers (and DTMF): dates, times, numbers,
yes/no, digit strings and free text.

Input is a speech transcript, so parsers search a sentence for the value
("I'd like to come in tomorrow morning") and accept words as well as digits
("four five seven two", "half past two"). Dates are resolved against an
explicit ``today``; nothing here reads the clock.

Values are JSON-friendly so they can travel in webhooks, LLM prompts and call
records: dates are ISO ``YYYY-MM-DD`` strings, times ``HH:MM``, numbers
``int``/``float``, yes/no ``bool``, digits and free text ``str``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

SlotKind = Literal["date", "time", "number", "yes_no", "digits", "free_text"]
SLOT_KINDS: tuple[SlotKind, ...] = ("date", "time", "number", "yes_no", "digits", "free_text")


@dataclass(frozen=True, slots=True)
class ParsedValue:
    """A slot value; ``approximate`` marks a guess (e.g. "morning" -> 09:00)."""

    value: str | int | float | bool
    approximate: bool = False


_UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_ORDINALS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "thirteenth": 13,
    "fourteenth": 14,
    "fifteenth": 15,
    "sixteenth": 16,
    "seventeenth": 17,
    "eighteenth": 18,
    "nineteenth": 19,
    "twentieth": 20,
    "thirtieth": 30,
}
_WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_MONTHS["sept"] = 9

_TOKEN_RE = re.compile(r"[a-z]+|\d+(?:[:.]\d+)?(?:st|nd|rd|th)?|[#*]")


def _tokens(text: str) -> list[str]:
    lowered = text.lower().replace("o'clock", "oclock").replace("\u2019", "'")
    lowered = re.sub(r"(\d),(\d{3})\b", r"\1\2", lowered)  # "1,200" is one number
    return _TOKEN_RE.findall(lowered)


def _word_number(tokens: list[str], i: int) -> tuple[int, int] | None:
    """A digit or spelled-out number starting at ``tokens[i]``: (value, tokens used).

    Stops where a new number would begin, so "four five" yields 4 and "two
    thirty" yields 2: callers decide what a run of numbers means.
    """
    if i >= len(tokens):
        return None
    if tokens[i].isdigit():
        return int(tokens[i]), 1
    total = 0
    current = 0
    last: str | None = None  # kind of the previous word
    j = i
    while j < len(tokens):
        word = tokens[j]
        following = tokens[j + 1] if j + 1 < len(tokens) else ""
        if word in _UNITS:
            value = _UNITS[word]
            if last in {None, "hundred", "thousand", "and"} or (last == "tens" and value < 10):
                current += value
                last = "unit" if value < 10 else "teen"
            else:
                break
        elif word in _TENS and last in {None, "hundred", "thousand", "and"}:
            current += _TENS[word]
            last = "tens"
        elif word == "hundred" and last in {"unit", "teen", "tens"} and current % 100 == current:
            current *= 100
            last = "hundred"
        elif word == "thousand" and last in {"unit", "teen", "tens", "hundred"}:
            total += current * 1000
            current = 0
            last = "thousand"
        elif (
            word == "and"
            and last in {"hundred", "thousand"}
            and (following in _UNITS or following in _TENS)
        ):
            last = "and"
        elif word == "a" and last is None and following in {"hundred", "thousand"}:
            current = 1
            last = "unit"
        else:
            break
        j += 1
    if j == i:
        return None
    return total + current, j - i


# --- yes / no ---------------------------------------------------------------

_YES = {
    "yes",
    "yeah",
    "yep",
    "yup",
    "sure",
    "correct",
    "right",
    "ok",
    "okay",
    "absolutely",
    "definitely",
    "certainly",
    "perfect",
    "great",
    "fine",
    "affirmative",
    "works",
    "good",
    "please",
}
_NO = {
    "no",
    "nope",
    "nah",
    "not",
    "don't",
    "dont",
    "wrong",
    "negative",
    "cancel",
    "never",
    "incorrect",
}
_STRONG_YES = {"yes", "yeah", "yep", "yup", "correct", "absolutely", "affirmative"}
_STRONG_NO = {"no", "nope", "nah", "negative"}


def parse_yes_no(text: str) -> ParsedValue | None:
    """``True``/``False`` from an answer like "Yes, that works" or "No, thanks"."""
    words = re.findall(r"[a-z']+", text.lower())
    if not words:
        return None
    # The first word carries the answer in most replies ("No, I want to speak to a person").
    if words[0] in _STRONG_YES:
        return ParsedValue(True)
    if words[0] in _STRONG_NO:
        return ParsedValue(False)
    joined = " ".join(words)
    if re.search(
        r"\b(doesn't|does not|don't|do not|won't|will not|can't|cannot|isn't|not)\b", joined
    ):
        return ParsedValue(False)
    yes = sum(w in _YES for w in words)
    no = sum(w in _NO for w in words)
    if yes and not no:
        return ParsedValue(True)
    if no and not yes:
        return ParsedValue(False)
    return None


# --- numbers and digits -----------------------------------------------------

_DIGIT_WORDS = {**{k: v for k, v in _UNITS.items() if v < 10}, "oh": 0, "o": 0, "nought": 0}


def parse_digits(text: str) -> ParsedValue | None:
    """A digit string from speech ("four five seven two", "4, 5, 7, 2", "double five")."""
    tokens = _tokens(text)
    out: list[str] = []
    repeat = 1
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        used = 1
        if tok in {"double", "triple"}:
            repeat = 2 if tok == "double" else 3
            i += 1
            continue
        if tok.isdigit():
            out.append(tok * repeat)
        elif tok in _DIGIT_WORDS and following not in {"hundred", "thousand"}:
            if tok not in {"o", "oh"} or out or repeat > 1:
                out.append(str(_DIGIT_WORDS[tok]) * repeat)
        elif tok in _UNITS or tok in _TENS:
            # "twenty three" or "one hundred" inside a digit string: say it as its number
            found = _word_number(tokens, i)
            if found is not None:
                out.append(str(found[0]) * repeat)
                used = found[1]
        repeat = 1
        i += used
    if not out:
        return None
    return ParsedValue("".join(out))


def parse_number(text: str) -> ParsedValue | None:
    """A number ("42", "3.5", "twenty three", "one hundred and five").

    A run of single digits ("four five seven two") reads as the digits' number
    (4572), as callers say account or order numbers that way.
    """
    tokens = _tokens(text)
    decimal = re.search(r"-?\d+\.\d+", text)
    if decimal:
        return ParsedValue(float(decimal.group()))
    singles = [
        t
        for t in tokens
        if (t in _DIGIT_WORDS and t not in {"o", "oh"}) or (t.isdigit() and len(t) == 1)
    ]
    numeric = [
        t
        for t in tokens
        if t.isdigit() or t in _UNITS or t in _TENS or t in {"hundred", "thousand"}
    ]
    if len(singles) >= 2 and len(singles) == len(numeric):
        digits = parse_digits(" ".join(singles))
        if digits is not None:
            return ParsedValue(int(str(digits.value)))
    for i in range(len(tokens)):
        found = _word_number(tokens, i)
        if found is not None:
            return ParsedValue(found[0])
    return None


# --- dates ------------------------------------------------------------------


def _ordinal(tok: str) -> int | None:
    m = re.fullmatch(r"(\d{1,2})(st|nd|rd|th)?", tok)
    if m:
        return int(m.group(1))
    return _ORDINALS.get(tok)


def _ordinal_at(tokens: list[str], i: int) -> tuple[int, int] | None:
    """Day-of-month ordinal at ``i`` ("5th", "fifth", "twenty first"): (day, tokens used)."""
    if i >= len(tokens):
        return None
    tok = tokens[i]
    if tok in {"twenty", "thirty"} and i + 1 < len(tokens) and tokens[i + 1] in _ORDINALS:
        day = _TENS[tok] + _ORDINALS[tokens[i + 1]]
        return (day, 2) if day <= 31 else None
    single = _ordinal(tok)
    if single is not None and 1 <= single <= 31:
        return single, 1
    return None


def _safe_date(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def _month_day(today: dt.date, month: int, day: int) -> dt.date | None:
    """The next ``month``/``day`` on or after today."""
    candidate = _safe_date(today.year, month, day)
    if candidate is not None and candidate < today:
        candidate = _safe_date(today.year + 1, month, day)
    return candidate


def parse_date(text: str, today: dt.date) -> ParsedValue | None:
    """A date said relative to ``today`` ("tomorrow", "next monday", "the 5th", "march 3rd")."""
    tokens = _tokens(text)
    iso = re.search(r"\b(\d{4})-(\d{2})-(\d{2})\b", text)
    if iso:
        found = _safe_date(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
        if found is not None:
            return ParsedValue(found.isoformat())
    joined = " ".join(tokens)
    if "day after tomorrow" in joined:
        return ParsedValue((today + dt.timedelta(days=2)).isoformat())
    for i, tok in enumerate(tokens):
        if tok in {"today", "tonight"}:
            return ParsedValue(today.isoformat())
        if tok == "tomorrow":
            return ParsedValue((today + dt.timedelta(days=1)).isoformat())
        if tok in _WEEKDAYS:
            ahead = (_WEEKDAYS[tok] - today.weekday()) % 7
            before = tokens[i - 1] if i else ""
            if ahead == 0 and before != "this":
                ahead = 7  # "on monday" said on a monday means next week
            return ParsedValue((today + dt.timedelta(days=ahead)).isoformat())
        if tok in _MONTHS and not (tok == "may" and not _near_ordinal(tokens, i)):
            month = _MONTHS[tok]
            after = _ordinal_at(tokens, i + 1 + (tokens[i + 1 : i + 2] == ["the"]))
            day_before = _ordinal_before(tokens, i)
            day = after[0] if after else day_before
            found = _month_day(today, month, day if day is not None else 1)
            if found is None:
                return None
            return ParsedValue(found.isoformat(), approximate=day is None)
        if (
            tok == "in"
            and i + 2 < len(tokens)
            and tokens[i + 2] in {"day", "days", "week", "weeks"}
        ):
            amount = 1 if tokens[i + 1] in {"a", "one"} else _word_number(tokens, i + 1)
            count = amount if isinstance(amount, int) else amount[0] if amount else None
            if count is not None and 0 < count <= 366:
                days = count * (7 if tokens[i + 2].startswith("week") else 1)
                return ParsedValue((today + dt.timedelta(days=days)).isoformat())
        if tok == "next" and i + 1 < len(tokens) and tokens[i + 1] == "week":
            monday = today + dt.timedelta(days=7 - today.weekday())
            return ParsedValue(monday.isoformat(), approximate=True)
    # "the 5th" / "on the fifth": day of this month, or next month once it has passed
    for i, tok in enumerate(tokens):
        if tok in {"the", "on"}:
            found_day = _ordinal_at(tokens, i + 1 + (tokens[i + 1 : i + 2] == ["the"]))
            if found_day is not None and _looks_ordinal(tokens, i + 1):
                return _day_of_month(today, found_day[0])
    if len(tokens) == 1 and re.fullmatch(r"\d{1,2}(st|nd|rd|th)|" + "|".join(_ORDINALS), tokens[0]):
        day = _ordinal(tokens[0])
        if day is not None:
            return _day_of_month(today, day)
    return None


def _looks_ordinal(tokens: list[str], i: int) -> bool:
    j = i + (tokens[i : i + 1] == ["the"])
    if j >= len(tokens):
        return False
    tok = tokens[j]
    return (
        bool(re.fullmatch(r"\d{1,2}(st|nd|rd|th)", tok))
        or tok in _ORDINALS
        or (tok in {"twenty", "thirty"} and j + 1 < len(tokens) and tokens[j + 1] in _ORDINALS)
    )


def _near_ordinal(tokens: list[str], i: int) -> bool:
    return _ordinal_at(tokens, i + 1 + (tokens[i + 1 : i + 2] == ["the"])) is not None or bool(
        _ordinal_before(tokens, i)
    )


def _ordinal_before(tokens: list[str], i: int) -> int | None:
    # "3rd of march", "the third of march", "3 march"
    j = i - 1
    if j >= 0 and tokens[j] == "of":
        j -= 1
    if j < 0:
        return None
    if j >= 1 and tokens[j - 1] in {"twenty", "thirty"} and tokens[j] in _ORDINALS:
        return _TENS[tokens[j - 1]] + _ORDINALS[tokens[j]]
    day = _ordinal(tokens[j])
    return day if day is not None and 1 <= day <= 31 else None


def _day_of_month(today: dt.date, day: int) -> ParsedValue | None:
    found = _safe_date(today.year, today.month, day)
    if found is None or found < today:
        year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
        found = _safe_date(year, month, day)
    return ParsedValue(found.isoformat()) if found is not None else None


# --- times ------------------------------------------------------------------

_PERIODS = {
    "morning": (9, 0),
    "noon": (12, 0),
    "midday": (12, 0),
    "lunchtime": (12, 0),
    "afternoon": (14, 0),
    "evening": (18, 0),
    "tonight": (19, 0),
    "night": (19, 0),
    "midnight": (0, 0),
}
_EXACT_PERIODS = {"noon", "midday", "midnight"}


def _hour_24(hour: int, meridiem: str | None, minute: int) -> int | None:
    if meridiem == "am":
        return 0 if hour == 12 else hour if hour <= 12 else None
    if meridiem == "pm":
        return 12 if hour == 12 else hour + 12 if hour < 12 else None
    if hour > 23 or minute > 59:
        return None
    # No am/pm: an appointment at "two" is 14:00, not 02:00 (business hours 7:00-18:59).
    return hour + 12 if 1 <= hour <= 6 else hour


def parse_time(text: str, *, loose: bool = True) -> ParsedValue | None:
    """A time of day ("10 am", "10:30", "half past two", "quarter to three", "morning").

    With ``loose`` (an answer to "what time?"), a bare number also counts ("ten");
    otherwise a cue is needed ("at ten", "ten o'clock") so "two people" is no time.
    """
    tokens = _tokens(text)
    meridiem: str | None = None
    for i, tok in enumerate(tokens):
        if tok in {"am", "pm"} or (tok in {"a", "p"} and tokens[i + 1 : i + 2] == ["m"]):
            meridiem = "am" if tok.startswith("a") else "pm"
    if meridiem is None:
        joined = " ".join(tokens)
        if re.search(r"\b(in the )?(afternoon|evening|tonight)\b", joined):
            meridiem = "pm"
        elif re.search(r"\bin the morning\b", joined):
            meridiem = "am"

    for i, tok in enumerate(tokens):
        clock = re.fullmatch(r"(\d{1,2})[:.](\d{2})", tok)
        if clock:
            hour, minute = int(clock.group(1)), int(clock.group(2))
            h24 = _hour_24(hour, meridiem, minute)
            if h24 is not None and minute < 60:
                return ParsedValue(f"{h24:02d}:{minute:02d}")
        if (
            tok in {"half", "quarter"}
            and i + 2 < len(tokens)
            and tokens[i + 1] in {"past", "to", "after"}
        ):
            hour_found = _word_number(tokens, i + 2)
            if hour_found is not None and 1 <= hour_found[0] <= 12:
                hour = hour_found[0]
                minute = 30 if tok == "half" else 15
                if tokens[i + 1] == "to":
                    if tok == "half":
                        continue
                    hour, minute = hour - 1 if hour > 1 else 12, 45
                h24 = _hour_24(hour, meridiem, minute)
                if h24 is not None:
                    return ParsedValue(f"{h24:02d}:{minute:02d}")

    for i, tok in enumerate(tokens):
        found = None if tok in {"a", "and"} else _word_number(tokens, i)
        if found is None:
            continue
        hour, used = found
        if not 1 <= hour <= 24 and not (hour >= 100 and hour % 100 < 60 and hour // 100 <= 23):
            continue
        minute = 0
        if hour >= 100:  # "1030"
            hour, minute = divmod(hour, 100)
        else:
            nxt = _word_number(tokens, i + used)
            if nxt is not None and 0 < nxt[0] < 60 and tokens[i + used] not in {"a"}:
                minute, extra = nxt
                used += extra
            elif tokens[i + used : i + used + 2] and tokens[i + used] == "oh":
                after = _word_number(tokens, i + used + 1)
                if after is not None and after[0] < 10:
                    minute = after[0]
                    used += 1 + after[1]
        after_tok = tokens[i + used] if i + used < len(tokens) else ""
        before_tok = tokens[i - 1] if i else ""
        cue = (
            (meridiem is not None and after_tok in {"am", "pm", "a", "p", "in"})
            or after_tok == "oclock"
            or before_tok in {"at", "around", "about", "by"}
        )
        if not cue and not loose:
            continue
        h24 = _hour_24(hour, meridiem if cue or loose else None, minute)
        if h24 is not None:
            return ParsedValue(f"{h24:02d}:{minute:02d}")

    for tok in tokens:
        if tok in _PERIODS:
            hour, minute = _PERIODS[tok]
            return ParsedValue(f"{hour:02d}:{minute:02d}", approximate=tok not in _EXACT_PERIODS)
    return None


# --- dispatch ----------------------------------------------------------------


def parse_free_text(text: str) -> ParsedValue | None:
    cleaned = " ".join(text.split())
    return ParsedValue(cleaned) if cleaned else None


def parse_slot(kind: str, text: str, today: dt.date) -> ParsedValue | None:
    """Parse an answer for a slot of ``kind``; ``None`` when nothing fits."""
    if kind == "date":
        return parse_date(text, today)
    if kind == "time":
        return parse_time(text)
    if kind == "number":
        return parse_number(text)
    if kind == "yes_no":
        return parse_yes_no(text)
    if kind == "digits":
        return parse_digits(text)
    return parse_free_text(text)


def extract_slot(kind: str, text: str, today: dt.date) -> ParsedValue | None:
    """Find a value inside a sentence that was not an answer to a question
    (e.g. the date and time in a booking request): stricter than :func:`parse_slot`."""
    if kind == "date":
        return parse_date(text, today)
    if kind == "time":
        return parse_time(text, loose=False)
    return None


def parse_dtmf(kind: str, digits: str) -> ParsedValue | None:
    """A slot value from keypad digits: 1 = yes, 2 = no for yes/no slots."""
    if not digits or not re.fullmatch(r"[0-9*#]+", digits):
        return None
    body = digits.rstrip("#")
    if kind == "yes_no":
        return {"1": ParsedValue(True), "2": ParsedValue(False)}.get(body)
    if kind == "number":
        return ParsedValue(int(body)) if body.isdigit() else None
    if kind in {"digits", "free_text"}:
        return ParsedValue(body) if body else None
    if kind == "time" and body.isdigit() and len(body) in {3, 4}:
        hour, minute = divmod(int(body), 100)
        return ParsedValue(f"{hour:02d}:{minute:02d}") if hour < 24 and minute < 60 else None
    return None


# --- speaking values back -----------------------------------------------------


def _ordinal_suffix(day: int) -> str:
    if 11 <= day % 100 <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def spoken(kind: str, value: object) -> str:
    """How the agent says a slot value ("Tuesday, March 4th", "9:30 AM", "yes")."""
    if value is None:
        return ""
    if kind == "date" and isinstance(value, str):
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            return value
        weekday, month = calendar.day_name[day.weekday()], calendar.month_name[day.month]
        return f"{weekday}, {month} {day.day}{_ordinal_suffix(day.day)}"
    if kind == "time" and isinstance(value, str):
        m = re.fullmatch(r"(\d{2}):(\d{2})", value)
        if not m:
            return value
        hour, minute = int(m.group(1)), int(m.group(2))
        if hour == 12 and minute == 0:
            return "noon"
        suffix = "AM" if hour < 12 else "PM"
        h12 = hour % 12 or 12
        return f"{h12} {suffix}" if minute == 0 else f"{h12}:{minute:02d} {suffix}"
    if kind == "yes_no" and isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "digits" and isinstance(value, str):
        return " ".join(value)
    return str(value)
