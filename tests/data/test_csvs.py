"""Video-list parsing: both separators, pseudo-label rows, and errors naming file, line and expectation."""

from __future__ import annotations

import pytest

from nightcrawler.data.csvs import (
    CsvFormatError,
    VideoRow,
    format_video_list,
    natural_sort_key,
    parse_video_list,
    write_video_list,
)


def _write(tmp_path, text, name="list.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_comma_rows_with_unknown_labels(tmp_path):
    path = _write(tmp_path, "Drink/Drink_1_1.mp4,0\n12.mp4,-1\n\nWave_3.avi,10\n")
    rows = parse_video_list(path, num_classes=11)
    assert rows == [VideoRow("Drink/Drink_1_1.mp4", 0), VideoRow("12.mp4", -1), VideoRow("Wave_3.avi", 10)]


def test_space_separator_and_fallback_between_separators(tmp_path):
    spaced = _write(tmp_path, "a.mp4 3\nb.mp4   4\n", "spaced.csv")
    assert parse_video_list(spaced, num_classes=11, separator=" ") == [
        VideoRow("a.mp4", 3),
        VideoRow("b.mp4", 4),
    ]
    # the original's default separator is a space but every shipped list uses commas: both configs read both
    assert parse_video_list(spaced, num_classes=11, separator=",") == [
        VideoRow("a.mp4", 3),
        VideoRow("b.mp4", 4),
    ]
    comma = _write(tmp_path, "a.mp4,3\n", "comma.csv")
    assert parse_video_list(comma, num_classes=11, separator=" ") == [VideoRow("a.mp4", 3)]


def test_pseudo_rows_carry_the_class_scores(tmp_path):
    probs = [0.0] * 11
    probs[7] = 0.75
    probs[6] = 0.2
    line = "dark/5.mp4,7," + ",".join(repr(p) for p in probs)
    rows = parse_video_list(_write(tmp_path, line + "\n"), num_classes=11, require_probs=True)
    assert rows[0].label == 7 and rows[0].probs == tuple(probs)
    assert len(rows[0].probs) == 11


@pytest.mark.parametrize(
    ("text", "kwargs", "line", "expected"),
    [
        ("a.mp4,1\nb.mp4\n", {}, 2, "expected '<path>,<label>'"),
        ("a.mp4,1\nb.mp4,x\n", {}, 2, "label must be an integer"),
        ("a.mp4,1\nb.mp4,11\n", {}, 2, "label must be in [-1, 11), got 11"),
        ("a.mp4,-2\n", {}, 1, "label must be in [-1, 11)"),
        ("a.mp4,-1\n", {"require_label": True}, 1, "label must be in [0, 11), got -1"),
        ("a.mp4,1,0.5,0.5\n", {}, 1, "2 or 13 fields"),
        ("a.mp4,1\nb.mp4,1," + ",".join(["0.1"] * 11) + "\n", {}, 2, "expected 2 fields like the first row"),
        ("a.mp4,1," + ",".join(["p"] * 11) + "\n", {}, 1, "class scores p0..p10 must be numbers"),
        ("a.mp4,1," + ",".join(["nan"] * 11) + "\n", {}, 1, "must be finite"),
        ("a.mp4,1\n", {"require_probs": True}, 1, "13 fields"),
        ("path,label\na.mp4,1\n", {}, 1, "label must be an integer"),
    ],
)
def test_malformed_lines_name_file_line_and_expectation(tmp_path, text, kwargs, line, expected):
    path = _write(tmp_path, text)
    with pytest.raises(CsvFormatError) as info:
        parse_video_list(path, num_classes=11, **kwargs)
    message = str(info.value)
    assert f"{path}:{line}:" in message
    assert expected in message


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(CsvFormatError, match="empty"):
        parse_video_list(_write(tmp_path, "\n\n"), num_classes=11)
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        parse_video_list(missing, num_classes=11)


def test_write_and_read_back(tmp_path):
    rows = [VideoRow("a.mp4", 2), VideoRow("B/c.mp4", -1)]
    path = tmp_path / "sub" / "out.csv"
    write_video_list(path, rows)
    assert path.read_text() == "a.mp4,2\nB/c.mp4,-1\n"
    assert parse_video_list(path, num_classes=3) == rows
    scored = [VideoRow("x.mp4", 1, (0.25, 0.7, 0.05))]
    assert format_video_list(scored) == "x.mp4,1,0.25,0.7,0.05\n"
    with pytest.raises(ValueError, match="contains the separator"):
        format_video_list([VideoRow("a,b.mp4", 0)])


def test_natural_sort_orders_numbers_numerically():
    names = ["10.mp4", "2.mp4", "1.mp4", "Drink/Drink_10_1.mp4", "Drink/Drink_2_1.mp4"]
    assert sorted(names, key=natural_sort_key) == [
        "1.mp4",
        "2.mp4",
        "10.mp4",
        "Drink/Drink_2_1.mp4",
        "Drink/Drink_10_1.mp4",
    ]
