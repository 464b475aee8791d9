"""Slot parsers for spoken answers and DTMF."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.agents.slots import (
    SLOT_KINDS,
    extract_slot,
    parse_date,
    parse_digits,
    parse_dtmf,
    parse_number,
    parse_slot,
    parse_time,
    parse_yes_no,
    spoken,
)

TUESDAY = dt.date(2025, 3, 4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("today", "2025-03-04"),
        ("tomorrow", "2025-03-05"),
        ("the day after tomorrow", "2025-03-06"),
        ("next monday", "2025-03-10"),
        ("on Tuesday", "2025-03-11"),  # said on a Tuesday: next week
        ("this tuesday", "2025-03-04"),
        ("Friday please", "2025-03-07"),
        ("the 5th", "2025-03-05"),
        ("on the fifth", "2025-03-05"),
        ("the 3rd", "2025-04-03"),  # already passed this month
        ("the twenty first", "2025-03-21"),
        ("march 3rd", "2026-03-03"),
        ("3rd of March", "2026-03-03"),
        ("April the second", "2025-04-02"),
        ("may 5th", "2025-05-05"),
        ("in 3 days", "2025-03-07"),
        ("in a week", "2025-03-11"),
        ("2025-12-01", "2025-12-01"),
        ("Hi, I'd like to book an appointment for tomorrow morning.", "2025-03-05"),
    ],
)
def test_dates(text: str, expected: str) -> None:
    parsed = parse_date(text, TUESDAY)
    assert parsed is not None and parsed.value == expected


@pytest.mark.parametrize(
    "text", ["May I book?", "hello", "february 30th", "the 45th", "", "2025-02-30"]
)
def test_not_dates(text: str) -> None:
    assert parse_date(text, TUESDAY) is None


def test_approximate_dates() -> None:
    week = parse_date("next week", TUESDAY)
    assert week is not None and week.value == "2025-03-10" and week.approximate
    month = parse_date("sometime in june", TUESDAY)
    assert month is not None and month.value == "2025-06-01" and month.approximate


@pytest.mark.parametrize(
    ("text", "expected", "approximate"),
    [
        ("10 am", "10:00", False),
        ("10am", "10:00", False),
        ("7 p.m.", "19:00", False),
        ("10:30", "10:30", False),
        ("half past two", "14:30", False),
        ("quarter past ten", "10:15", False),
        ("quarter to three", "14:45", False),
        ("ten o'clock", "10:00", False),
        ("ten", "10:00", False),
        ("two thirty", "14:30", False),
        ("at 3", "15:00", False),
        ("9 in the morning", "09:00", False),
        ("noon", "12:00", False),
        ("morning", "09:00", True),
        ("in the afternoon", "14:00", True),
        ("twelve thirty am", "00:30", False),
    ],
)
def test_times(text: str, expected: str, approximate: bool) -> None:
    parsed = parse_time(text)
    assert parsed is not None
    assert (parsed.value, parsed.approximate) == (expected, approximate)


def test_strict_time_needs_a_cue() -> None:
    assert parse_time("two people", loose=False) is None
    assert parse_time("ten", loose=False) is None
    strict = parse_time("on Wednesday at two", loose=False)
    assert strict is not None and strict.value == "14:00"
    assert parse_time("hello") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("3.5", 3.5),
        ("twenty three", 23),
        ("one hundred and five", 105),
        ("a thousand", 1000),
        ("two thousand and twenty four", 2024),
        ("four five seven two", 4572),
        ("My order number is four five seven two.", 4572),
        ("My order number is 4, 5, 7, 2", 4572),
        ("1,200 please", 1200),
    ],
)
def test_numbers(text: str, expected: float) -> None:
    parsed = parse_number(text)
    assert parsed is not None and parsed.value == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("four five seven two", "4572"),
        ("4, 5, 7, 2", "4572"),
        ("double five one", "551"),
        ("five oh two", "502"),
        ("twenty three", "23"),
        ("1234#", "1234"),
    ],
)
def test_digits(text: str, expected: str) -> None:
    parsed = parse_digits(text)
    assert parsed is not None and parsed.value == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes, that works for me.", True),
        ("yeah please", True),
        ("sure", True),
        ("sounds good", True),
        ("No, I want to speak to a person.", False),
        ("nope", False),
        ("that doesn't work", False),
        ("not really", False),
        ("maybe", None),
        ("", None),
    ],
)
def test_yes_no(text: str, expected: bool | None) -> None:
    parsed = parse_yes_no(text)
    assert (parsed.value if parsed else None) is expected


def test_dtmf() -> None:
    yes = parse_dtmf("yes_no", "1")
    assert yes is not None and yes.value is True
    no = parse_dtmf("yes_no", "2")
    assert no is not None and no.value is False
    assert parse_dtmf("yes_no", "3") is None
    digits = parse_dtmf("digits", "1234#")
    assert digits is not None and digits.value == "1234"
    number = parse_dtmf("number", "0042")
    assert number is not None and number.value == 42
    time = parse_dtmf("time", "0930")
    assert time is not None and time.value == "09:30"
    assert parse_dtmf("time", "2599") is None
    assert parse_dtmf("date", "12") is None
    assert parse_dtmf("digits", "12a") is None


def test_extract_is_stricter_than_parse() -> None:
    text = "I'd like to book for two people on friday"
    assert extract_slot("time", text, TUESDAY) is None
    assert parse_slot("time", text, TUESDAY) is not None
    found = extract_slot("date", text, TUESDAY)
    assert found is not None and found.value == "2025-03-07"
    assert extract_slot("number", text, TUESDAY) is None


def test_spoken_forms() -> None:
    assert spoken("date", "2025-03-05") == "Wednesday, March 5th"
    assert spoken("date", "2025-03-22") == "Saturday, March 22nd"
    assert spoken("date", "2025-03-11") == "Tuesday, March 11th"
    assert spoken("time", "09:00") == "9 AM"
    assert spoken("time", "14:30") == "2:30 PM"
    assert spoken("time", "12:00") == "noon"
    assert spoken("yes_no", True) == "yes"
    assert spoken("digits", "4572") == "4 5 7 2"
    assert spoken("number", 7) == "7"
    assert spoken("date", None) == ""
    assert spoken("date", "not a date") == "not a date"


@given(st.sampled_from(SLOT_KINDS), st.text(max_size=60))
def test_parsers_never_raise(kind: str, text: str) -> None:
    parse_slot(kind, text, TUESDAY)
    extract_slot(kind, text, TUESDAY)
    parse_dtmf(kind, text)
