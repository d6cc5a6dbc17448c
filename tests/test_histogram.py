"""Histogram formatting (no kernel)."""

import io

import pytest

from kprobekit.histogram import bucket_of, format_linear, format_log2, print_log2

pytestmark = pytest.mark.unit


def test_bucket_of_is_bit_length():
    assert [bucket_of(v) for v in (0, 1, 2, 3, 4, 7, 8, 1023, 1024)] == [0, 1, 2, 2, 3, 3, 4, 10, 11]


def test_log2_ranges_counts_and_bars():
    lines = format_log2({0: 1, 1: 1, 3: 4, 5: 2}, "nsecs")
    assert "nsecs" in lines[0] and "count" in lines[0] and "distribution" in lines[0]
    rows = [ln.split(":")[0].split("->") for ln in lines[1:]]
    assert [(int(a), int(b)) for a, b in rows] == [(0, 1), (2, 3), (4, 7), (8, 15), (16, 31)]
    counts = [int(ln.split(":")[1].split("|")[0]) for ln in lines[1:]]
    assert counts == [2, 0, 4, 0, 2]
    bars = [ln.split("|")[1].rstrip() for ln in lines[1:]]
    assert bars[2] == "*" * 40 and bars[0] == "*" * 20 and bars[1] == ""
    assert len({len(ln) for ln in lines[1:]}) == 1


def test_list_input_and_empty():
    assert format_log2([0, 0, 0]) == []
    out = io.StringIO()
    print_log2([0, 3], "usecs", file=out)
    assert out.getvalue().splitlines()[1].split(":")[1].split("|")[0].strip() == "3"


def test_linear():
    lines = format_linear({0: 2, 2: 1}, "ret")
    assert [ln.split(":")[0].strip() for ln in lines[1:]] == ["0", "1", "2"]
    lines = format_linear({1: 5}, "ms", step=10)
    assert lines[1].split(":")[0].strip() == "10 -> 19"
