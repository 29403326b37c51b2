"""The method benchmark end to end at a tiny size: every figure of benchmark.json is computed from the runs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from nightcrawler.method.stats import mcnemar_exact, paired_delta_interval, top1_interval
from nightcrawler.pseudo.io import read_labelled_list, read_pseudo_csv
from tests.conftest import REPO_ROOT

TINY_PLAN = {
    "recipe": str(REPO_ROOT / "configs" / "benchmark"),
    "models": ["uniformer_tiny", "sf_tiny"],
    "stages": 2,
    "epochs": 2,
    "pseudo_epochs": 1,
    "data": {
        "num_classes": 3,
        "frames": 16,
        "width": 96,
        "height": 72,
        "per_class": {"labeled": 3, "dry": 2, "dark": 3, "arid": 2, "test": 3},
    },
    "last_stage_tta": [2, 3],
    "pretrain": {
        "motions": ["Drink", "Jump", "Spin", "Circle"],
        "per_class": 3,
        "val_per_class": 1,
        "epochs": 2,
    },
}
SEEDS = [3, 4]


def _run(plan, work, *extra):
    return subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "benchmark_method.py"),
            "--plan",
            str(plan),
            "--workdir",
            str(work),
            "--seeds",
            *map(str, SEEDS),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    plan = root / "plan.yaml"
    plan.write_text(yaml.safe_dump(TINY_PLAN))
    work = root / "work"
    res = _run(plan, work)
    assert res.returncode == 0, (
        res.stdout[-3000:] + res.stderr[-3000:] + (work / "run.log").read_text()[-3000:]
    )
    return plan, work, res.stdout


def test_writes_the_three_files_with_every_step_in_method_order(bench):
    _, work, out = bench
    data = json.loads((work / "benchmark.json").read_text())
    names = [s["name"] for s in data["steps"]]
    assert names == [
        "source_only",
        "gamma_tta",
        "adapt_bn",
        "pseudo_stage1",
        "pseudo_stage2",
        "final_vote",
        "normal_light_val",
    ]
    assert [(d["from"], d["to"]) for d in data["deltas"]] == list(zip(names[:-2], names[1:-1]))
    assert set(data["pseudo_labels"]) == {"stage1", "stage2"}
    assert data["seconds"]["total"] > 0 and data["seconds"]["steps"]
    assert data["test_videos_per_seed"] == [9, 9] and data["seeds"] == SEEDS
    md = (work / "benchmark.md").read_text()
    assert md.count("\n| `") >= len(names) + len(data["deltas"])
    assert (work / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    # visible progress: one line per step with elapsed time and an estimate of the rest
    lines = [line for line in out.splitlines() if line.startswith("[benchmark] seed")]
    assert len(lines) > 20 and all("elapsed" in line and "left" in line for line in lines)


def test_means_and_intervals_come_from_the_per_seed_predictions(bench):
    _, work, _ = bench
    data = json.loads((work / "benchmark.json").read_text())
    records = [json.loads((work / f"seed_{s}" / "record.json").read_text()) for s in SEEDS]
    steps = {s["name"]: s for s in data["steps"]}

    def runs(step, member="ensemble"):
        return [np.asarray(r["steps"][step][member]) == np.asarray(r["test_labels"]) for r in records]

    for name in ["source_only", "gamma_tta", "adapt_bn", "pseudo_stage1", "pseudo_stage2", "final_vote"]:
        s = steps[name]
        per_seed = [float(x.mean()) for x in runs(name)]
        assert s["top1_per_seed"] == pytest.approx(per_seed)
        assert s["top1_mean"] == pytest.approx(np.mean(per_seed))
        ci = top1_interval(runs(name))
        assert s["top1_ci95"] == pytest.approx([ci.lo, ci.hi])
        assert s["top1_ci95"][0] <= s["top1_mean"] <= s["top1_ci95"][1]
        for m, pm in s.get("per_model", {}).items():
            assert pm["top1_mean"] == pytest.approx(np.mean([x.mean() for x in runs(name, m)]))
    for d in data["deltas"]:
        before, after = runs(d["from"]), runs(d["to"])
        assert d["mean"] == pytest.approx(steps[d["to"]]["top1_mean"] - steps[d["from"]]["top1_mean"])
        assert d["ci95"] == pytest.approx(paired_delta_interval(before, after).as_list())
        assert d["mcnemar_p"] == pytest.approx(mcnemar_exact(before, after)[0])
    # the vote's figure is the submission CSV's, scored on the hidden labels
    for r in records:
        hidden = read_labelled_list(work / f"seed_{r['seed']}" / "data" / "hidden" / "test_labels.csv")
        assert sorted(hidden) == r["test_names"]


def test_records_hold_the_controls_probe_final_normal_light_and_brightness(bench):
    _, work, _ = bench
    members = {*TINY_PLAN["models"], "ensemble"}
    for seed in SEEDS:
        r = json.loads((work / f"seed_{seed}" / "record.json").read_text())
        val = r["normal_light_val"]
        assert len(val["names"]) == 6  # val_dry: 2 per class
        c = r["controls"]
        assert c["names"] == val["names"] and c["labels"] == val["labels"]
        assert set(c["preds"]) == {"as_sampled", "shuffled_frames", "one_frame"}
        assert c["preds"]["as_sampled"] == val["preds"]
        for kind, preds in c["preds"].items():
            assert set(preds) == members and all(len(p) == 6 for p in preds.values()), kind
        src = work / f"seed_{seed}" / "exp_source_only" / "sf_tiny"
        controlled = sorted(p.name.split("x1x1_gnone")[1] for p in src.glob("val_dry*_gnone_*.pkl"))
        assert controlled == ["_oneframe.pkl", "_shuffle.pkl"]  # beside the normal val_dry*_gnone.pkl
        probe = r["baselines"]["one_frame_probe"]
        assert probe["normal_light"]["labels"] == val["labels"] and len(probe["normal_light"]["preds"]) == 6
        assert len(probe["dark_test"]["preds"]) == len(r["test_names"]) == 9
        assert all(0 <= p < 3 for p in probe["dark_test"]["preds"] + probe["normal_light"]["preds"])
        final = r["normal_light_final"]
        assert final["names"] == val["names"] and final["labels"] == val["labels"]
        assert set(final["preds"]) == members and all(len(p) == 6 for p in final["preds"].values())
        stats = r["dark_test_stats"]
        assert {"mean", "std", "std_over_mean", "videos"} <= set(stats) and stats["videos"] == 9
        assert len(stats["mean"]) == 3 and max(stats["mean"]) < 0.5  # dark videos


def test_original_recipe_runs_beside_ours_from_the_same_weights(bench):
    """The original chain: raw-clip BN statistics on our supervised weights, the original's threshold table at
    stage 1 (the set's three classes' columns), every video at the last stage, raw pseudo clips, its own vote."""
    _, work, _ = bench
    members = {*TINY_PLAN["models"], "ensemble"}
    for seed in SEEDS:
        folder = work / f"seed_{seed}"
        orig = json.loads((folder / "record.json").read_text())["original_recipe"]
        assert list(orig["steps"]) == ["adapt_bn", "pseudo_stage1", "pseudo_stage2", "final_vote"]
        for step, preds in orig["steps"].items():
            assert set(preds) == ({"ensemble"} if step == "final_vote" else members)
            assert all(len(p) == 9 for p in preds.values())
        assert set(orig["pseudo_labels"]) == {"stage1", "stage2"}
        assert orig["pseudo_labels"]["stage2"]["rows"] == 15  # the last stage keeps every video
        stage1 = yaml.safe_load((folder / "orig_configs" / "pseudo_stage1.yaml").read_text())
        assert stage1["selection"] == {"method": "thresholds", "thresholds": [0.509, 0.385, 0.416]}
        assert stage1["inputs"]["models"] == {
            "uniformer": "orig_exp_adapt_bn/uniformer_tiny",
            "slowfast": "orig_exp_adapt_bn/sf_tiny",
        }
        assert (folder / "orig_submission" / "submission.csv").is_file()
        for m in TINY_PLAN["models"]:
            assert (folder / "orig_exp_pseudo_stage2" / m / "best.pyth").is_file()
            assert (folder / "exp_pseudo_stage2" / m / "best.pyth").is_file()  # ours kept
        adapted = torch.load(folder / "orig_exp_adapt_bn" / "sf_tiny" / "best.pyth", weights_only=False)
        assert adapted["bn_adaptation"]
    log = (work / "run.log").read_text()
    assert "orig_exp_adapt_bn" in log and "TRAIN.PSEUDO_EPOCH_LENGTH shorter" in log


def test_pseudo_label_figures_match_the_stage_csvs(bench):
    _, work, _ = bench
    data = json.loads((work / "benchmark.json").read_text())
    for seed in SEEDS:
        hidden = read_labelled_list(work / f"seed_{seed}" / "data" / "hidden" / "total_unlabel_labels.csv")
        for stage, per_seed in data["pseudo_labels"].items():
            names, labels, _ = read_pseudo_csv(work / f"seed_{seed}" / "data" / "pseudo" / f"{stage}.csv")
            right = sum(hidden[n] == int(c) for n, c in zip(names, labels))
            q = per_seed[str(seed)]
            assert q["rows"] == len(names) and sum(q["rows_per_class"]) == len(names)
            assert q["precision"] == pytest.approx(right / len(names))
            assert q["recall"] == pytest.approx(right / len(hidden))


def test_source_weights_are_zoo_files_loaded_through_the_users_keys(bench):
    _, work, _ = bench
    zoo = sorted((work / "pretrain").glob("*/zoo.pth"))
    assert len(zoo) == 2
    uni = torch.load(next(z for z in zoo if "uniformer" in str(z)), weights_only=True)
    sf = torch.load(next(z for z in zoo if "sf_tiny" in str(z)), weights_only=True)
    assert set(uni) == {"model"} and set(sf) == {"model"}
    assert all(k.startswith("module.backbone.") for k in sf["model"])  # the AlphAction layout
    log = (work / "run.log").read_text()
    assert "UNIFORMER.PRETRAIN_NAME" in log and "SF.PRETRAIN_NAME" in log


def test_a_second_run_reuses_the_cache_and_the_finished_seeds(bench):
    plan, work, _ = bench
    before = (work / "benchmark.json").read_text()
    published = work.parent / "published"
    res = _run(plan, work, "--publish", str(published))
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("reusing") == len(SEEDS)
    # --publish: the results, every seed's record naming its commit, and the README's table
    for name in ("benchmark.json", "benchmark.md", "benchmark.png", "confusion.json", "confusion.png"):
        assert (published / name).read_bytes() == (work / name).read_bytes()
    for s in SEEDS:
        record = json.loads((published / f"seed_{s}.json").read_text())
        assert record["seed"] == s and len(record["commit"]["sha"]) == 40
    table = (published / "readme_table.md").read_text()
    assert table.startswith("<!-- benchmark table") and "`final_vote`" in table and "`adapt_bn`" in table
    after = json.loads((work / "benchmark.json").read_text())
    assert [s["top1_per_seed"] for s in after["steps"]] == [
        s["top1_per_seed"] for s in json.loads(before)["steps"]
    ]
    # the report names the reused seeds with the time their own runs took
    took = [json.loads(before)["seconds"][f"seed_{s}"] for s in SEEDS]
    assert after["seconds"]["reused_seeds"] == SEEDS
    assert [after["seconds"][f"seed_{s}"] for s in SEEDS] == took
    assert (
        f"(seeds {', '.join(map(str, SEEDS))} reused from an earlier run"
        in (work / "benchmark.md").read_text()
    )


def test_ablations_rerun_a_stage_paired_and_reuse_their_results(bench, tmp_path):
    _, work, _ = bench
    variants = tmp_path / "variants.yaml"
    variants.write_text(
        yaml.safe_dump(
            {
                "base": {"doc": "the recipe's stage"},
                # two settings in one variant keeps the test short: every row labelled, at 0.1x the LR
                "all_rows": {"doc": "every row", "lr_scale": 0.1, "pseudo": {"selection": {"method": "all"}}},
            },
            sort_keys=False,
        )
    )
    cmd = [
        sys.executable,
        str(REPO_ROOT / "tools" / "ablate_pseudo.py"),
        "--workdir",
        str(work),
        "--variants",
        str(variants),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads((work / "ablations.json").read_text())
    assert list(out["variants"]) == ["base", "all_rows"] and out["seeds"] == SEEDS
    records = {s: json.loads((work / f"seed_{s}" / "record.json").read_text()) for s in SEEDS}
    start = [
        np.asarray(records[s]["steps"]["adapt_bn"]["ensemble"]) == np.asarray(records[s]["test_labels"])
        for s in SEEDS
    ]
    assert out["start_top1"] == pytest.approx(np.mean([x.mean() for x in start]))
    for name, v in out["variants"].items():
        cached = [
            json.loads((work / f"seed_{s}" / "ablations" / name / "result_stage1.json").read_text())
            for s in SEEDS
        ]
        runs = [
            np.asarray(c["result"]["preds"]["ensemble"]) == np.asarray(records[s]["test_labels"])
            for c, s in zip(cached, SEEDS)
        ]
        assert v["top1_mean"] == pytest.approx(np.mean([r.mean() for r in runs]))
        assert v["delta_vs_adapt_bn"]["ci95"] == pytest.approx(paired_delta_interval(start, runs).as_list())
    # the base variant is the benchmark's own stage 1: same labels, same training, same predictions
    for s in SEEDS:
        base = json.loads((work / f"seed_{s}" / "ablations" / "base" / "result_stage1.json").read_text())
        assert base["result"]["preds"] == records[s]["steps"]["pseudo_stage1"]
    # every row labelled: the variant's own CSV, as many rows as unlabelled videos
    assert out["variants"]["all_rows"]["labels"]["rows"] == 15
    assert "| `all_rows` |" in (work / "ablations.md").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("reusing") == 2 * len(SEEDS)


def test_variants_run_paired_against_the_originals_choices(bench, tmp_path):
    """--variants on one finished seed: enhancement / TENT variants at the adapt-BN level, distillation at stage 1;
    the table's figures are those of the variant record's per-video predictions."""
    from nightcrawler.method.variants import build_variant_table, load_variants

    plan, work, _ = bench
    config = tmp_path / "variants.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "gamma": {"doc": "reference", "level": "adapt_bn", "enhance": "gamma:value=0.25"},
                "tent": {
                    "doc": "TENT",
                    "level": "adapt_bn",
                    "enhance": "gamma:value=0.25",
                    "opts": {"TENT.ENABLE": True, "TENT.STEPS": 2, "TENT.BATCH_SIZE": 2},
                },
                "distill": {
                    "doc": "raw student, gamma teacher",
                    "level": "pseudo_stage1",
                    "opts": {
                        "DATA.TRAIN_GAMMA": -1.0,
                        "ENHANCE.BN": "none",
                        "ENHANCE.TEST": "none",
                        "DISTILL.ENABLE": True,
                    },
                    "teacher": True,
                },
            },
            sort_keys=False,
        )
    )
    seed = SEEDS[0]
    cmd = [sys.executable, str(REPO_ROOT / "tools" / "benchmark_method.py"), "--plan", str(plan)]
    cmd += [
        "--workdir",
        str(work),
        "--seeds",
        str(seed),
        "--variants",
        "all",
        "--variants-config",
        str(config),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, (
        res.stdout[-3000:] + res.stderr[-3000:] + (work / "run.log").read_text()[-3000:]
    )
    table = json.loads((work / "variants.json").read_text())
    assert [r["name"] for r in table["variants"]] == ["gamma", "tent", "distill"]
    record = json.loads((work / f"seed_{seed}" / "record.json").read_text())
    variants = json.loads((work / f"seed_{seed}" / "variants" / "record.json").read_text())
    assert variants["test_names"] == record["test_names"]
    # the table is computed from the per-video predictions of the runs
    again = build_variant_table([record], [variants], load_variants(config))
    assert again["variants"] == table["variants"]
    labels = np.asarray(record["test_labels"])
    rows = {r["name"]: r for r in table["variants"]}
    for name in ("gamma", "tent"):
        right = np.asarray(variants["variants"][name]["ensemble"]) == labels
        assert rows[name]["top1_mean"] == pytest.approx(right.mean())
    ref = np.asarray(variants["variants"]["gamma"]["ensemble"]) == labels
    tent = np.asarray(variants["variants"]["tent"]["ensemble"]) == labels
    assert rows["tent"]["delta"]["mean"] == pytest.approx(tent.mean() - ref.mean())
    assert rows["distill"]["reference"] == "pseudo_stage1" and "delta" in rows["distill"]
    # TENT changed only BN affine parameters of the adapted weights; distillation trained a raw-clip student
    sf = "sf_tiny"
    plain = torch.load(work / f"seed_{seed}" / "variants" / "gamma" / sf / "best.pyth", weights_only=True)
    tented = torch.load(work / f"seed_{seed}" / "variants" / "tent" / sf / "best.pyth", weights_only=True)
    changed = [
        k for k in plain["model_state"] if not torch.equal(plain["model_state"][k], tented["model_state"][k])
    ]
    state = plain["model_state"]
    assert changed and all(  # weight / bias of layers with running statistics: BatchNorm's affine parameters
        k.endswith((".weight", ".bias")) and f"{k.rsplit('.', 1)[0]}.running_mean" in state for k in changed
    )
    assert (work / "variants.md").read_text().count("| `") == 3 and (work / "variants.png").is_file()
    # a second run reuses every variant run under the same settings
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and again.stdout.count("reusing variant") == 3
    assert json.loads((work / "variants.json").read_text()) == table


def test_shipped_variants_load_and_bad_variant_files_are_named(tmp_path):
    """Every variant of configs/benchmark/variants.yaml parses (``all``, the reference first); a malformed file or an
    unknown name is a ConfigError naming the file."""
    from nightcrawler.config.loading import ConfigError
    from nightcrawler.method.variants import load_variants

    shipped = REPO_ROOT / "configs" / "benchmark" / "variants.yaml"
    names = [v.name for v in load_variants(shipped, ["all"])]
    assert names[0] == "gamma" and {"clahe", "learned_curve", "tent", "distill"} <= set(names)
    assert [v.name for v in load_variants(shipped, ["tent"])] == ["gamma", "tent"]
    bad = tmp_path / "variants.yaml"
    bad.write_text("x:\n  doc: a: b\n")
    with pytest.raises(ConfigError, match="variants.yaml: not valid YAML"):
        load_variants(bad)
    with pytest.raises(ConfigError, match="unknown variant.*nope"):
        load_variants(shipped, ["nope"])


def test_variant_table_costs_are_counted_against_a_variant_of_the_same_run():
    """Extra seconds per test video at the adapt-BN level, per epoch at stage 1 (against ``cost_reference``)."""
    from nightcrawler.method.variants import Variant, build_variant_table, variant_markdown

    labels = [0, 1, 2, 0]
    records = [
        {"seed": 0, "models": ["m"], "test_labels": labels, "steps": {"pseudo_stage1": {"ensemble": labels}}}
    ]
    preds = {"ensemble": [0, 1, 0, 0], "m": [0, 1, 0, 0]}
    secs = {
        "gamma": {"m: BN statistics": 4.0, "m: dark test": 8.0},
        "clahe": {"m: BN statistics": 6.0, "m: dark test": 10.0},
        "raw": {"m: stage-1 training and dark test": 40.0},
        "distill": {"m: stage-1 training and dark test": 52.0},
    }
    variants = [
        Variant("gamma", "ref", "adapt_bn", enhance="gamma"),
        Variant("clahe", "c", "adapt_bn", enhance="clahe"),
        Variant("raw", "r", "pseudo_stage1"),
        Variant("distill", "d", "pseudo_stage1", teacher=True, cost_reference="raw"),
    ]
    recs = [{"seed": 0, "variants": {v.name: preds for v in variants}, "seconds": secs}]
    rows = {r["name"]: r for r in build_variant_table(records, recs, variants, train_epochs=4)["variants"]}
    assert rows["clahe"]["extra_seconds_per_video"] == pytest.approx(4.0 / len(labels))
    assert rows["distill"]["extra_seconds_per_epoch"] == pytest.approx(12.0 / 4)
    assert "extra_seconds_per_epoch" not in rows["raw"]  # its reference ran in another run: no same-run cost
    assert rows["distill"]["delta"]["mean"] == pytest.approx(0.75 - 1.0)
    assert rows["distill"]["delta_vs_cost_reference"]["mean"] == 0.0  # same predictions as its own baseline
    text = variant_markdown(build_variant_table(records, recs, variants, train_epochs=4))
    assert "+3.0 s / epoch vs `raw`" in text and "+1.000 s / test video" in text and "vs `raw`: +0.0" in text
