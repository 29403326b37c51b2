"""benchmark.json from fabricated seed records whose every figure is known by hand: 3 seeds x 20 dark test
videos, 3 classes; a wrong prediction is always the next class, on the first videos of a seed."""

from __future__ import annotations

import copy
import json
import math
import subprocess

import pytest

from nightcrawler.method.report import (
    README_TABLE_END,
    README_TABLE_START,
    benchmark_markdown,
    build_benchmark,
    git_commit,
    readme_table,
    write_benchmark,
)
from tests.conftest import REPO_ROOT

T975_2 = 4.302653  # Student's t, 0.975 quantile, 2 degrees of freedom
CLASSES = ["Sit", "Stand", "Walk"]
SEEDS = [1, 2, 3]
LABELS = [i % 3 for i in range(20)]  # 7 Sit, 7 Stand, 6 Walk
# right videos per seed (of 20) of each step's ensemble
OURS = {
    "source_only": [4, 5, 6],
    "gamma_tta": [8, 9, 10],
    "adapt_bn": [12, 13, 14],
    "pseudo_stage1": [14, 15, 16],
    "final_vote": [14, 15, 17],
}
ORIGINAL = {"adapt_bn": [11, 12, 13], "pseudo_stage1": [12, 13, 14], "final_vote": [13, 14, 15]}
NORMAL = [i % 3 for i in range(10)]


def preds(right: int, labels: list[int] = LABELS, classes: int = 3) -> list[int]:
    """``labels`` with the first ``len - right`` replaced by the next class."""
    wrong = len(labels) - right
    return [(y + 1) % classes if i < wrong else y for i, y in enumerate(labels)]


def members(right: int, labels: list[int] = LABELS, with_models: bool = True) -> dict:
    out = {"ensemble": preds(right, labels)}
    if with_models:
        out |= {"m1": preds(right, labels), "m2": preds(max(right - 2, 0), labels)}
    return out


def steps_of(table: dict, k: int) -> dict:
    return {s: members(c[k], with_models=s != "final_vote") for s, c in table.items()}


def base_record(k: int) -> dict:
    return {
        "seed": SEEDS[k],
        "models": ["m1", "m2"],
        "class_names": CLASSES,
        "test_names": [f"v{i}" for i in range(20)],
        "test_labels": LABELS,
        "steps": steps_of(OURS, k),
        "extras": {"vote_mode_1x1": members(OURS["pseudo_stage1"][k], with_models=False)},
        "normal_light_val": {"names": list(range(10)), "labels": NORMAL, "preds": members(9, NORMAL)},
        "pseudo_labels": {
            "stage1": {"rows": 10, "precision": 0.8, "recall": 0.4, "rows_per_class": [4, 3, 3]}
        },
        "seconds": {},
    }


def full_record(k: int) -> dict:
    r = base_record(k)
    r["normal_light_final"] = {
        "names": list(range(20)),
        "labels": LABELS,
        "preds": members([19, 19, 20][k]),
    }
    r["controls"] = {
        "names": list(range(10)),
        "labels": NORMAL,
        "preds": {
            kind: members(right[k], NORMAL)
            for kind, right in [
                ("as_sampled", [9, 8, 9]),
                ("shuffled_frames", [3, 4, 3]),
                ("one_frame", [3, 3, 3]),
            ]
        },
    }
    r["baselines"] = {
        "one_frame_probe": {
            "normal_light": {"labels": NORMAL, "preds": preds([3, 4, 3][k], NORMAL)},
            "dark_test": {"preds": preds([7, 7, 6][k])},
        }
    }
    r["original_recipe"] = {
        "steps": steps_of(ORIGINAL, k),
        "pseudo_labels": {"stage1": {"rows": 8, "precision": 0.5, "recall": 0.2}},
    }
    r["dark_test_stats"] = {
        "mean": [0.08, 0.07, 0.06],
        "std": [0.1, 0.09, 0.08],
        "std_over_mean": [1.25, 0.09 / 0.07, 0.08 / 0.06],
        "videos": 20,
    }
    return r


def t95(values: list[float]) -> list[float]:
    """By hand: mean -+ t(0.975, 2) * s / sqrt(3)."""
    m = sum(values) / 3
    s = math.sqrt(sum((v - m) ** 2 for v in values) / 2)
    return [m - T975_2 * s / math.sqrt(3), m + T975_2 * s / math.sqrt(3)]


@pytest.fixture(scope="module")
def full():
    return build_benchmark([full_record(k) for k in range(3)], {"plan": "test"})


@pytest.fixture(scope="module")
def bare():
    return build_benchmark([base_record(k) for k in range(3)], {"plan": "test"})


def by_name(entries: list[dict], key: str = "name") -> dict:
    return {e[key]: e for e in entries}


def test_steps_carry_the_t_interval_beside_the_bootstrap(full):
    steps = by_name(full["steps"])
    s = steps["adapt_bn"]
    assert s["top1_per_seed"] == pytest.approx([0.6, 0.65, 0.7])
    assert s["top1_t95"] == pytest.approx(t95([0.6, 0.65, 0.7]), abs=1e-6)
    assert s["top1_t95"] == pytest.approx([0.525793, 0.774207], abs=1e-6)
    assert len(s["top1_ci95"]) == 2
    assert s["per_model"]["m2"]["top1_t95"] == pytest.approx(t95([0.5, 0.55, 0.6]), abs=1e-6)
    assert steps["normal_light_val"]["top1_t95"] == pytest.approx([0.9, 0.9])  # no spread over seeds
    nlf = full["normal_light_final"]
    assert nlf["name"] == "normal_light_final" and nlf["top1_per_seed"] == pytest.approx([0.95, 0.95, 1.0])
    assert nlf["top1_t95"] == pytest.approx([0.895, 1.0], abs=1e-3)  # 1.038 clipped to a top-1's range
    assert "normal_light_final" not in steps  # the dark-test steps stay as they were


def test_deltas_carry_per_seed_t_and_sign_flip(full):
    deltas = {(d["from"], d["to"]): d for d in full["deltas"]}
    d = deltas[("gamma_tta", "adapt_bn")]
    assert d["per_seed"] == pytest.approx([0.2, 0.2, 0.2])
    assert d["t95"] == pytest.approx([0.2, 0.2]) and d["sign_flip_p"] == pytest.approx(0.25)
    last = deltas[("pseudo_stage1", "final_vote")]
    assert last["per_seed"] == pytest.approx([0.0, 0.0, 0.05])
    assert last["t95"] == pytest.approx(t95([0.0, 0.0, 0.05]), abs=1e-6)
    assert last["sign_flip_p"] == 1.0  # every sign pattern of (0, 0, 0.05) has the same |mean|
    assert {"ci95", "mcnemar_p", "videos_lost", "videos_gained"} <= set(last)


def test_pattern_says_resolved_only_when_the_interval_excludes_zero(full):
    pattern = by_name(full["pattern"], "claim")
    assert pattern["adapt_bn > gamma_tta"]["resolved"] is True
    level = pattern["final_vote >= vote_mode_1x1"]  # one video gained on one seed
    assert level["holds"] is True and level["resolved"] is False and level["ci95"][0] == 0.0


def test_gap_closed_from_gamma_against_the_final_models(full, bare):
    gap = full["dark_gap_closed"]
    per_seed = [0.3 / 0.55, 0.3 / 0.5, 0.35 / 0.5]
    assert gap["from"] == "gamma_tta" and gap["reference"] == "normal_light_final"
    assert gap["per_seed"] == pytest.approx(per_seed)
    assert gap["mean"] == pytest.approx(sum(per_seed) / 3)
    assert gap["t95"] == pytest.approx(t95(per_seed), abs=1e-6)
    assert "note" not in gap
    # without the final models on normal light, the source-only ones (0.9) are the reference
    assert bare["dark_gap_closed"]["reference"] == "normal_light_val"
    assert bare["dark_gap_closed"]["per_seed"] == pytest.approx([0.3 / 0.5, 0.3 / 0.45, 0.35 / 0.4])


def test_a_seed_without_a_gap_is_null_and_noted():
    records = [base_record(k) for k in range(3)]
    records[1]["normal_light_val"]["preds"]["ensemble"] = preds(4, NORMAL)  # 0.4 < gamma_tta's 0.45
    gap = build_benchmark(records, {})["dark_gap_closed"]
    assert gap["per_seed"][1] is None and gap["per_seed"][0] == pytest.approx(0.6)
    assert gap["mean"] == pytest.approx((0.6 + 0.35 / 0.4) / 2)
    assert "seed(s) 2" in gap["note"]


def test_controls_probe_and_original_recipe(full):
    ens = full["controls"]["ensemble"]
    assert ens["as_sampled"]["top1_per_seed"] == pytest.approx([0.9, 0.8, 0.9])
    assert ens["shuffled_frames"]["top1_mean"] == pytest.approx(1 / 3)
    assert ens["one_frame"]["top1_t95"] == pytest.approx([0.3, 0.3])
    assert set(full["controls"]) == {"ensemble", "m1", "m2"}
    probe = full["baselines"]["one_frame_probe"]
    assert probe["chance"] == pytest.approx(1 / 3)
    assert probe["normal_light"]["top1_per_seed"] == pytest.approx([0.3, 0.4, 0.3])
    assert probe["dark_test"]["top1_per_seed"] == pytest.approx([0.35, 0.35, 0.3])
    orig = full["original_recipe"]
    assert [s["name"] for s in orig["steps"]] == ["adapt_bn", "pseudo_stage1", "final_vote"]
    assert orig["steps"][0]["top1_t95"] == pytest.approx(t95([0.55, 0.6, 0.65]), abs=1e-6)
    versus = by_name(orig["versus_ours"], "step")
    assert list(versus) == ["adapt_bn", "pseudo_stage1", "final_vote"]
    v = versus["final_vote"]
    assert v["ours_mean"] == pytest.approx(46 / 60) and v["original_mean"] == pytest.approx(42 / 60)
    assert v["per_seed"] == pytest.approx([0.05, 0.05, 0.1])
    assert v["delta_mean"] == pytest.approx(4 / 60) and v["sign_flip_p"] == pytest.approx(0.25)
    assert v["delta_t95"] == pytest.approx(t95([0.05, 0.05, 0.1]), abs=1e-6)
    assert v["delta_ci95"][0] <= v["delta_mean"] <= v["delta_ci95"][1]
    assert orig["pseudo_labels"]["stage1"]["2"]["rows"] == 8


def test_confusion_counts_by_hand(full):
    conf = full["confusion"]
    # adapt_bn: 8, 7, 6 wrong videos (the first of each seed), each predicted as the next class
    a = conf["adapt_bn"]
    assert a["class_names"] == CLASSES
    assert a["matrix"] == [[13, 8, 0], [0, 14, 7], [6, 0, 12]]
    assert a["per_class_recall"] == pytest.approx([13 / 21, 14 / 21, 12 / 18])
    assert a["pair_confusion"] == [{"kind": "time_order", "pair": ["Sit", "Stand"], "a_to_b": 8, "b_to_a": 0}]
    # final_vote: 6, 5, 3 wrong
    assert conf["final_vote"]["matrix"] == [[16, 5, 0], [0, 16, 5], [4, 0, 14]]
    assert conf["pairs"] == {"time_order": [["Sit", "Stand"]], "speed": []}  # no Run among the classes


def test_confusion_pairs_with_run_among_the_classes():
    records = [base_record(k) for k in range(3)]
    for r in records:
        r["class_names"] = ["Sit", "Stand", "Walk", "Run"]
        r["steps"]["final_vote"]["ensemble"] = [3 if y == 2 else y for y in LABELS]  # every Walk as Run
    conf = build_benchmark(records, {})["confusion"]
    assert conf["pairs"]["speed"] == [["Walk", "Run"]]
    speed = conf["final_vote"]["pair_confusion"][1]
    assert (speed["pair"], speed["a_to_b"], speed["b_to_a"]) == (["Walk", "Run"], 18, 0)
    assert conf["final_vote"]["per_class_recall"] == [1.0, 1.0, 0.0, None]  # no Run among the test videos


def test_dark_test_stats_per_seed_and_mean(full):
    stats = full["dark_test_stats"]
    assert [s["seed"] for s in stats["per_seed"]] == SEEDS and stats["per_seed"][0]["videos"] == 20
    assert stats["mean_over_seeds"]["mean"] == pytest.approx([0.08, 0.07, 0.06])


def test_checks_hold_on_the_good_records(full):
    checks = by_name(full["checks"])
    assert set(checks) == {
        "probe_near_chance",
        "shuffled_frames_drop",
        "normal_light_level",
        "arid_like_darkness",
        "pattern_on_mean:gamma_tta-source_only",
        "pattern_on_mean:adapt_bn-gamma_tta",
        "pattern_on_mean:pseudo_stage1-adapt_bn",
        "pattern_on_mean:final_vote-pseudo_stage1",
    }
    assert all(c["holds"] for c in checks.values())
    assert checks["probe_near_chance"]["value"] == pytest.approx(0.4 - 1 / 3)
    assert checks["shuffled_frames_drop"]["per_seed"] == pytest.approx([0.6, 0.4, 0.6])
    assert checks["normal_light_level"]["value"] == pytest.approx(0.8)
    assert checks["arid_like_darkness"]["value"]["channel_mean_range"] == pytest.approx([0.06, 0.08])
    last = checks["pattern_on_mean:pseudo_stage1-adapt_bn"]
    assert last["value"] == pytest.approx(0.1) and last["threshold"] == 0.03


def test_checks_fail_where_the_records_say_so():
    records = [full_record(k) for k in range(3)]
    r = records[2]
    r["baselines"]["one_frame_probe"]["normal_light"]["preds"] = preds(6, NORMAL)  # 0.6: 27 points off
    r["controls"]["preds"]["shuffled_frames"]["ensemble"] = preds(8, NORMAL)  # drop of 0.1
    r["controls"]["preds"]["as_sampled"]["ensemble"] = preds(7, NORMAL)  # 0.7 < 0.75 (and a drop of -0.1)
    r["dark_test_stats"]["mean"] = [0.2, 0.07, 0.06]
    for rec in records:
        rec["steps"]["final_vote"]["ensemble"] = preds(13)  # 0.65 < 0.75 - 0.02
    checks = by_name(build_benchmark(records, {})["checks"])
    for name in ["probe_near_chance", "shuffled_frames_drop", "normal_light_level", "arid_like_darkness"]:
        assert checks[name]["holds"] is False, name
    assert checks["arid_like_darkness"]["per_seed"] == [True, True, False]
    assert checks["normal_light_level"]["value"] == pytest.approx(0.7)
    assert checks["pattern_on_mean:final_vote-pseudo_stage1"]["holds"] is False
    assert checks["pattern_on_mean:adapt_bn-gamma_tta"]["holds"] is True


def test_sections_are_left_out_when_the_records_lack_them(bare):
    for key in ["normal_light_final", "controls", "baselines", "original_recipe", "dark_test_stats"]:
        assert key not in bare
    assert all(c["name"].startswith("pattern_on_mean:") for c in bare["checks"])
    # one seed with the section is not enough: it needs every seed
    records = [base_record(k) for k in range(3)]
    records[0]["controls"] = full_record(0)["controls"]
    assert "controls" not in build_benchmark(records, {})
    # no adapt_bn / final_vote: no confusion and no gap
    short = copy.deepcopy([base_record(k) for k in range(3)])
    for r in short:
        r["steps"] = {k: r["steps"][k] for k in ("source_only", "gamma_tta")}
    bench = build_benchmark(short, {})
    assert "confusion" not in bench and "dark_gap_closed" not in bench


def test_one_seed_writes_null_bounds_and_valid_json(tmp_path):
    bench = build_benchmark([full_record(0)], {})
    assert by_name(bench["steps"])["adapt_bn"]["top1_t95"] == [None, None]
    assert bench["deltas"][0]["sign_flip_p"] == 1.0
    write_benchmark(bench, tmp_path)
    text = (tmp_path / "benchmark.json").read_text()
    assert "NaN" not in text and json.loads(text)["dark_gap_closed"]["t95"] == [None, None]
    assert "[n/a]" in (tmp_path / "benchmark.md").read_text()


def test_commit_is_heads():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    commit = git_commit(REPO_ROOT)
    assert commit["sha"] == head.stdout.strip() and isinstance(commit["dirty"], bool)


def test_commit_is_none_outside_a_checkout(tmp_path):
    assert git_commit(tmp_path) is None


def test_markdown_renders_every_section(full):
    md = benchmark_markdown(full)
    for text in [
        "top-1 mean [95 % t]",
        "seed-level Student-t",
        "sign-flip p",
        "| `normal_light_final` |",
        "original's recipe",
        "ours - original",
        "normal-light control",
        "one-frame linear probe",
        "Dark gap closed from gamma_tta",
        "normal_light_final - gamma_tta",
        "dark test videos",
        "per-class recall, Sit",
        "| check | holds |",
        "| resolved |",
    ]:
        assert text in md, text
    # the main interval of adapt_bn is its t interval
    assert "| `adapt_bn` | **65.0** [52.6, 77.4] |" in md


def test_write_benchmark_writes_the_confusion_files(full, bare, tmp_path):
    write_benchmark(full, tmp_path / "full")
    assert json.loads((tmp_path / "full" / "confusion.json").read_text()) == full["confusion"]
    assert (tmp_path / "full" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "full" / "benchmark.json").read_text()) == full
    without = copy.deepcopy(bare)
    del without["confusion"]
    write_benchmark(without, tmp_path / "bare")
    assert (tmp_path / "bare" / "benchmark.png").exists()
    assert (
        not (tmp_path / "bare" / "confusion.json").exists()
        and not (tmp_path / "bare" / "confusion.png").exists()
    )


def test_readme_table_rows_are_the_benchmarks_figures(full):
    table = readme_table(full)
    assert table.startswith(README_TABLE_START) and table.rstrip().endswith(README_TABLE_END)
    rows = {line.split("|")[1].strip(" `"): line for line in table.splitlines() if line.startswith("| `")}
    steps = by_name(full["steps"])
    assert list(rows) == [*steps, "normal_light_final"]
    for name, row in rows.items():
        s = full["normal_light_final"] if name == "normal_light_final" else steps[name]
        assert (
            f"**{100 * s['top1_mean']:.1f}** [{100 * s['top1_t95'][0]:.1f}, {100 * s['top1_t95'][1]:.1f}]"
            in row
        )
    v = by_name(full["original_recipe"]["versus_ours"], "step")["final_vote"]
    assert f"{100 * v['delta_mean']:+.1f} [{100 * v['delta_t95'][0]:+.1f}, " in rows["final_vote"]
    assert rows["source_only"].count("|") == rows["final_vote"].count("|") == 7  # original's cells left empty


def test_the_readme_shows_the_published_benchmark_table():
    """README.md's table is docs/benchmark/readme_table.md (written by --publish) verbatim."""
    published = REPO_ROOT / "docs" / "benchmark"
    table = (published / "readme_table.md").read_text()
    assert table in (REPO_ROOT / "README.md").read_text()
    bench = json.loads((published / "benchmark.json").read_text())
    assert readme_table(bench) == table
