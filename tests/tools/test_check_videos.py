"""tools/check_videos.py in-process and as a subprocess: the table of bad files, the CSV report, the exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nightcrawler.data.check import read_report
from tests.data.test_check import EXPECTED, bad_folder
from tools.check_videos import main

__all__ = ["bad_folder"]  # fixture
REPO = Path(__file__).resolve().parents[2]


def test_cli_table_csv_and_exit_code(bad_folder, tmp_path, capsys):
    out = tmp_path / "rep.csv"
    args = [
        "--csv",
        str(bad_folder / "list.csv"),
        "--root",
        str(bad_folder),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 3
    text = capsys.readouterr().out
    for n, kind in EXPECTED.items():
        assert (n in text) == (kind != "ok")
    assert "7 checked, 6 bad" in text
    assert {r.name: r.kind for r in read_report(out)} == EXPECTED
    (bad_folder / "good.csv").write_text("good.mp4,-1\n")
    proc = subprocess.run(
        [sys.executable, "tools/check_videos.py", "--csv", str(bad_folder / "good.csv"), "--root", str(bad_folder),
         "--out", str(tmp_path / "g.csv"), "--no-progress", "--workers", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "1 checked, 0 bad" in proc.stdout


def test_cfg_mode_reads_the_split_list_and_roots(bad_folder, tmp_path, capsys):
    clips = tmp_path / "ARID_v1.5/clips_v1.5/Drink"
    clips.mkdir(parents=True)
    (clips / "good.mp4").write_bytes((bad_folder / "good.mp4").read_bytes())
    (clips / "garbage.mp4").write_bytes((bad_folder / "garbage.mp4").read_bytes())
    (tmp_path / "arid.csv").write_text("Drink/good.mp4,0\nDrink/garbage.mp4,1\nDrink/gone.mp4,2\n")
    cfg = str(REPO / "configs/models/uniformer_tiny.yaml")
    argv = ["--cfg", cfg, "--split", "arid", "--workers", "2", "--no-progress",
            "DATA.PATH_PREFIX", str(tmp_path), "DATA.PATH_LABEL_SEPARATOR", ","]  # fmt: skip
    assert main(argv) == 3
    text = capsys.readouterr().out
    assert "3 checked, 2 bad (1 missing, 1 unreadable)" in text and "Drink/good.mp4" not in text
    rows = read_report(tmp_path / "arid_check.csv")  # default: beside the list
    assert [(r.name, r.kind) for r in rows] == [
        ("Drink/good.mp4", "ok"),
        ("Drink/garbage.mp4", "unreadable"),
        ("Drink/gone.mp4", "missing"),
    ]
