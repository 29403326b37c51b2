"""The ensemble vote: golden/vote per mode and final, the printed-tensor format, hand-made rules and votes."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from nightcrawler.pseudo.config import CONFIG_DIR, ReassignRule, load_ensemble_config
from nightcrawler.pseudo.io import PseudoLabelError
from nightcrawler.pseudo.vote import (
    apply_reassign,
    format_torch_row,
    read_submission,
    resolve_mode_paths,
    run_ensemble,
    submission_text,
    vote_majority,
    vote_original,
    write_ensemble_files,
)


@pytest.fixture(scope="module")
def ensemble(golden):
    cfg = load_ensemble_config(CONFIG_DIR / "ensemble" / "original.yaml")
    inputs = golden / "vote" / "inputs"
    result = run_ensemble(cfg, resolve_mode_paths(cfg, inputs), inputs / "data" / "test.csv")
    return cfg, result


def test_modes_match_intermediate(golden, ensemble):
    _, result = ensemble
    npz = np.load(golden / "vote" / "expected" / "intermediate.npz")
    assert list(result.modes) == ["0", "1", "2", "3", "4"]
    for m, mode in result.modes.items():
        np.testing.assert_allclose(
            mode.fusion.blend, npz[f"mode{m}_blend_before_slowfast_replacement"], rtol=0, atol=1e-6
        )
        np.testing.assert_allclose(mode.fusion.fused, npz[f"mode{m}_fused_probs"], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(mode.argmax, npz[f"mode{m}_argmax"])
        np.testing.assert_array_equal(mode.final_pred, npz[f"mode{m}_final_pred"])
        assert mode.probability.dtype == np.float32
        np.testing.assert_allclose(mode.probability, npz[f"mode{m}_final_probability"], rtol=0, atol=1e-6)


def test_modes_match_summary(golden, ensemble):
    _, result = ensemble
    summary = json.loads((golden / "vote" / "summary.json").read_text())
    for m, mode in result.modes.items():
        expected = summary["modes"][m]
        assert int((mode.fusion.branch == 0).sum()) == expected["rows_in_6_7_branch"]
        replaced = mode.fusion.replaced_by == 0
        assert int(replaced.sum()) == expected["rows_whose_blend_argmax_was_5_or_9_replaced_by_slowfast"]
        changed = replaced & (np.argmax(mode.fusion.blend, axis=1) != mode.argmax)
        assert int(changed.sum()) == expected["rows_where_replacement_changed_the_argmax"]
        assert mode.rules.hits == expected["rule_hits"]
        assert int((mode.rules.times_changed > 0).sum()) == expected["rows_changed_by_rules"]
        extra_rewrites = int(np.maximum(mode.rules.times_changed - 1, 0).sum())
        assert extra_rewrites == expected["rows_rewritten_more_than_once"]
        counts = np.bincount(mode.final_pred, minlength=11)
        assert {str(c): int(n) for c, n in enumerate(counts)} == expected["final_class_counts"]


def test_vote_matches_golden(golden, ensemble):
    _, result = ensemble
    with open(golden / "vote" / "expected" / "per_mode_predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["Video"] for r in rows] == list(result.names)
    assert [int(r["vote"]) for r in rows] == result.voted.tolist()
    for m, mode in result.modes.items():
        assert [int(r[f"mode{m}_final"]) for r in rows] == mode.final_pred.tolist()
    vote = json.loads((golden / "vote" / "summary.json").read_text())["vote"]
    assert result.source.count("1") == vote["rows_taken_from_mode1_file"]
    assert result.source.count("4") == vote["rows_taken_from_mode4_file"]
    disagree = result.modes["1"].final_pred != result.modes["4"].final_pred
    assert int(disagree.sum()) == vote["rows_where_modes_1_and_4_disagree"]
    np.testing.assert_array_equal(
        result.voted, np.minimum(result.modes["1"].final_pred, result.modes["4"].final_pred)
    )


def test_torch_format_files_are_byte_identical(golden, ensemble, tmp_path):
    cfg, result = ensemble
    written = write_ensemble_files(result, cfg, tmp_path, "torch")
    expected = golden / "vote" / "expected"
    for m in result.modes:
        assert (
            written[f"mode {m}"].read_bytes() == (expected / "submission" / f"arid_pred_{m}.csv").read_bytes()
        )
    assert written["submission"].read_bytes() == (expected / "arid_pred.csv").read_bytes()
    # the details file carries the same classes as the golden per-mode table plus provenance
    with open(written["details"], newline="") as f:
        details = list(csv.DictReader(f))
    assert {d["vote_source"] for d in details} == {"1", "4"}


def test_columns_format_reads_back(golden, ensemble, tmp_path):
    cfg, result = ensemble
    written = write_ensemble_files(result, cfg, tmp_path, "columns")
    text = written["submission"].read_text()
    assert text.startswith("VideoID,Video,ClassID,p0,p1,") and "\r" not in text and "tensor" not in text
    ids, names, classes, probs = read_submission(written["submission"])
    assert ids == list(range(400)) and names == list(result.names)
    np.testing.assert_array_equal(classes, result.voted)
    np.testing.assert_array_equal(probs.astype(np.float32), result.probability)  # float32 round trip
    # the golden printed-tensor file reads to the same numbers within its 4 decimals
    _, _, gclasses, gprobs = read_submission(golden / "vote" / "expected" / "arid_pred.csv")
    np.testing.assert_array_equal(gclasses, classes)
    np.testing.assert_allclose(gprobs, probs, atol=5.1e-5)


def test_format_torch_row_cases():
    assert format_torch_row([0.5, 0.25]) == "tensor([[0.5000, 0.2500]])"
    long_row = format_torch_row(np.full(11, 1 / 11, np.float32))
    assert long_row == "tensor([[" + ", ".join(["0.0909"] * 9) + ",\n         0.0909, 0.0909]])"
    # widths follow the widest value; scientific notation when values span more than 1000x
    assert format_torch_row([12.5, 0.5]) == "tensor([[12.5000,  0.5000]])"
    assert format_torch_row([1e-5, 0.5]) == "tensor([[1.0000e-05, 5.0000e-01]])"
    assert format_torch_row([1.0, 2.0]) == "tensor([[1., 2.]])"
    sci = format_torch_row(np.geomspace(1e-6, 1, 7))
    assert sci.count("\n") == 1 and sci.split("\n")[0].count("e-") == 6  # 6 per line at width 10
    assert format_torch_row([-0.5, 0.25]) == "tensor([[-0.5000,  0.2500]])"


def test_format_torch_row_matches_torch():
    """Cross-check against torch itself (tests only: the package never imports torch)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    cases = [rng.dirichlet(np.ones(11)) for _ in range(20)]
    cases += [rng.normal(size=11) * 10.0 ** rng.integers(-6, 9) for _ in range(20)]
    cases += [[0.0, 0.5], [0.0, 0.0], [3.0, 0.0], [1e9, 1.0], [float("nan"), 0.5], [float("inf"), 1.0]]
    for values in cases:
        values = np.asarray(values, dtype=np.float32)
        assert format_torch_row(values) == str(torch.tensor(values[None, :])), values


def test_apply_reassign_passes_chain():
    # pass 0: 10 -> 2 if p2 >= .2, else -> 3 if p3 >= .1 ; pass 1: 3 -> 0 if p0 >= .05
    rules = (
        ReassignRule(pred=10, prob_of=10, at_most=0.84, branches=((2, 0.2), (3, 0.1))),
        ReassignRule(pred=3, prob_of=3, at_most=0.7, branches=((0, 0.05),)),
    )
    probs = np.zeros((4, 11))
    probs[0, [10, 2, 3]] = [0.5, 0.25, 0.2]  # first branch wins
    probs[1, [10, 3, 0]] = [0.5, 0.15, 0.1]  # 10 -> 3, then 3 -> 0 in the next pass
    probs[2, [10, 2]] = [0.9, 0.3]  # p10 above the limit: untouched
    probs[3, [3, 0]] = [0.8, 0.2]  # p3 above the limit: untouched
    out = apply_reassign(np.array([10, 10, 10, 3]), probs, rules)
    assert out.pred.tolist() == [2, 0, 10, 3]
    assert out.times_changed.tolist() == [1, 2, 0, 0]
    assert out.hits == {
        "pass0: 10->2 (p[10]<=0.84 and p[2]>=0.2)": 1,
        "pass0: 10->3 (p[10]<=0.84 and p[3]>=0.1)": 1,
        "pass1: 3->0 (p[3]<=0.7 and p[0]>=0.05)": 1,
    }


def test_vote_original_ties_go_to_smaller_class():
    voters = [np.array([5, 1, 2, 7, 6]), np.array([3, 1, 9, 7, 3]), np.array([5, 4, 9, 0, 4])]
    voted, source = vote_original(voters, 11)
    assert voted.tolist() == [5, 1, 9, 7, 3]  # last row: a three-way tie goes to the smallest class
    assert source.tolist() == [0, 0, 1, 0, 1]
    voted, source = vote_original([np.array([8, 2]), np.array([4, 6])], 11)
    assert voted.tolist() == [4, 2] and source.tolist() == [1, 0]  # two voters: min, row from its file


def test_vote_majority_breaks_ties_by_probability():
    f1 = np.array([[0.1, 0.6, 0.3], [0.8, 0.1, 0.1]])
    f2 = np.array([[0.1, 0.2, 0.7], [0.7, 0.2, 0.1]]) * 0.3  # a 0.3-scale row weighs like the others
    voted, votes, mean = vote_majority([np.array([1, 0]), np.array([2, 0])], [f1, f2], 3)
    assert voted.tolist() == [2, 0]  # tie 1 vs 2: mean prob .4 vs .5
    assert votes.tolist() == [1, 2]
    np.testing.assert_allclose(mean[0], [0.1, 0.4, 0.5])


def test_ensemble_errors(golden, tmp_path):
    cfg = load_ensemble_config(CONFIG_DIR / "ensemble" / "original.yaml")
    inputs = golden / "vote" / "inputs"
    paths = resolve_mode_paths(cfg, inputs)
    with pytest.raises(PseudoLabelError, match=r"vote over mode\(s\) \['4'\] that are not run"):
        run_ensemble(cfg, paths, inputs / "data" / "test.csv", modes=["0", "1"])
    shutil.copytree(inputs, tmp_path / "root")
    (tmp_path / "root" / "exp_pseudo_stage4" / "mvit_b32_k600" / "testx32x224x1x3.pkl").unlink()
    with pytest.raises(
        PseudoLabelError, match=r"PKL not found: .*exp_pseudo_stage4/mvit_b32_k600/testx32x224x1x3"
    ):
        run_ensemble(cfg, resolve_mode_paths(cfg, tmp_path / "root"), inputs / "data" / "test.csv")
    with pytest.raises(PseudoLabelError, match=r"has no 'video_names'; give the test CSV \(--test-csv\)"):
        run_ensemble(cfg, paths, None)
    with pytest.raises(PseudoLabelError, match=r"unknown model role\(s\) \['resnet'\]"):
        resolve_mode_paths(cfg, inputs, {"resnet": "x"})
    overridden = resolve_mode_paths(
        cfg, inputs, overrides={"views_3x3:dense": "/x/d.pkl", "mvit": "/x/m.pkl"}
    )
    assert str(overridden["4"]["dense"]) == "/x/d.pkl" and str(overridden["0"]["dense"]).endswith("x1x1.pkl")
    assert str(overridden["0"]["mvit"]) == str(overridden["3"]["mvit"]) == "/x/m.pkl"


def test_ensemble_configs():
    cfg = load_ensemble_config(CONFIG_DIR / "ensemble" / "original.yaml")
    assert cfg.vote.modes == ("1", "4") and cfg.vote.method == "original"
    assert cfg.mode("0").pkls["dense"] == "testx32x224x1x1.pkl" and cfg.mode("3").pkls["dense"].endswith(
        "3x3.pkl"
    )
    assert cfg.mode("2").fusion.weights == {
        "ssv2": 0.4,
        "k600": 0.3,
        "mvit": 0.1,
        "slowfast": 0.1,
        "dense": 0.1,
    }
    assert cfg.mode("1").reassign[2] == ReassignRule(8, 9, 0.73, ((1, 0.2), (4, 0.1), (0, 0.1), (10, 0.7)))
    majority = load_ensemble_config(CONFIG_DIR / "ensemble" / "majority.yaml")
    assert majority.vote.method == "majority" and len(majority.vote.modes) == 5
    assert majority.modes == cfg.modes
    two = load_ensemble_config(CONFIG_DIR / "ensemble" / "two_models.yaml")
    assert sorted(two.models) == ["slowfast", "uniformer"] and two.mode("3x3").fusion.rules == ()


def test_submission_text_rejects_unknown_format():
    with pytest.raises(PseudoLabelError, match="probability format"):
        submission_text(["a"], [0], np.array([1]), np.zeros((1, 2), np.float32), "json")
