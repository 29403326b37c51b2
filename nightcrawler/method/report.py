"""Turns the per-seed records of :class:`nightcrawler.method.pipeline.SeedRun` into the benchmark's
``benchmark.json``, ``benchmark.md`` and ``benchmark.png`` (and ``confusion.json`` / ``confusion.png``).

Every figure is computed from the records: a step's top-1 per seed is the fraction of that seed's test videos
it classified right, its mean is the mean over seeds; its main interval is the seed-level Student-t interval
of the per-seed top-1s (``top1_t95``, clipped to [0, 1]), beside the two-level bootstrap of :mod:`nightcrawler.method.stats`
(``top1_ci95``). A delta pairs two steps on the same videos and seeds: its bootstrap interval, the t interval
and sign-flip permutation p of its per-seed deltas, and McNemar's video-level p.

The records' optional sections (``controls``, ``baselines``, ``normal_light_final``, ``original_recipe``,
``dark_test_stats``) enter the benchmark only when every seed's record has them; otherwise the section is
left out. Non-finite figures (a t interval of one seed) are written as null.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np

from nightcrawler.method.pipeline import ENSEMBLE
from nightcrawler.method.stats import (
    mcnemar_exact,
    paired_delta_interval,
    sign_flip_p,
    t_interval,
    top1_interval,
)
from nightcrawler.utils.io import atomic_write, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[2]
CI_METHOD = (
    "absolute levels: seed-level Student-t 95 % interval of the per-seed top-1 (top1_t95, the main interval; "
    "null with one seed), beside a two-level bootstrap (top1_ci95: seeds with replacement, then videos with "
    "replacement within each seed, 4000 draws, percentile interval); deltas: paired two-level bootstrap on "
    "the same draw (ci95) plus the t interval (t95) and the exact sign-flip permutation p (sign_flip_p, at "
    "least 2 / 2^seeds) of the per-seed deltas; McNemar's exact test on the discordant videos pooled over "
    "seeds is kept only as a video-level secondary figure (it ignores training noise between seeds)"
)
CONTROL_KINDS = ("as_sampled", "shuffled_frames", "one_frame")
CONFUSION_STEPS = ("adapt_bn", "final_vote")
CONFUSABLE_PAIRS = {"time_order": (("Sit", "Stand"),), "speed": (("Walk", "Run"),)}
TOLERANCE = 1e-9  # slack of the checks' thresholds against floating-point noise


def git_commit(root: Path = REPO_ROOT) -> dict | None:
    """``{"sha": HEAD's commit, "dirty": the work tree has uncommitted or untracked changes}`` of the checkout
    at ``root``; None when ``root`` is no git checkout or git cannot be run."""
    if not (Path(root) / ".git").exists():
        return None

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    try:
        sha, status = git("rev-parse", "HEAD"), git("status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"sha": sha.strip(), "dirty": bool(status.strip())}


def step_order(records: list[dict]) -> list[str]:
    names = list(records[0]["steps"])
    for r in records[1:]:
        if list(r["steps"]) != names:
            raise ValueError(
                f"seed {r['seed']} has steps {list(r['steps'])}, seed {records[0]['seed']} {names}"
            )
    return names


def correct(record: dict, step: str, member: str = ENSEMBLE) -> np.ndarray:
    return np.asarray(record["steps"][step][member]) == np.asarray(record["test_labels"])


def _right(preds, labels) -> np.ndarray:
    return np.asarray(preds) == np.asarray(labels)


def _all_have(records: list[dict], key: str) -> bool:
    return all(r.get(key) is not None for r in records)


def _summary(runs: list[np.ndarray]) -> dict:
    """Top-1 per seed, its mean, the bootstrap interval and the seed-level t interval of ``runs`` (clipped to
    [0, 1], where a top-1 lies; None bounds with one seed)."""
    ci = top1_interval(runs)
    per_seed = [float(r.mean()) for r in runs]
    return {
        "top1_per_seed": per_seed,
        "top1_mean": ci.mean,
        "top1_ci95": ci.as_list(),
        "top1_t95": [
            None if math.isnan(b) else min(max(b, 0.0), 1.0) for b in t_interval(per_seed).as_list()
        ],
    }


def _delta(before: list[np.ndarray], after: list[np.ndarray]) -> dict:
    """``after - before`` paired on the same seeds and videos: mean, bootstrap ``ci95``, and the t interval and
    sign-flip p of the per-seed deltas."""
    d = paired_delta_interval(before, after)
    per_seed = [float(a.mean() - b.mean()) for b, a in zip(before, after)]
    return {
        "mean": d.mean,
        "ci95": d.as_list(),
        "t95": t_interval(per_seed).as_list(),
        "sign_flip_p": sign_flip_p(per_seed),
        "per_seed": per_seed,
    }


def _steps(records: list[dict], names: list[str]) -> list[dict]:
    """A summary per step of the ensemble, with ``per_model`` for the models the step has."""
    out = []
    for name in names:
        entry = {"name": name, **_summary([correct(r, name) for r in records])}
        members = [m for m in records[0]["models"] if m in records[0]["steps"][name]]
        if members:
            entry["per_model"] = {m: _summary([correct(r, name, m) for r in records]) for m in members}
        out.append(entry)
    return out


def _labelled_step(records: list[dict], key: str) -> dict:
    """A step-like summary of ``record[key] = {"labels", "preds": {member: [...]}}`` (normal-light videos)."""
    sets = [r[key] for r in records]
    entry = {"name": key, **_summary([_right(s["preds"][ENSEMBLE], s["labels"]) for s in sets])}
    members = [m for m in records[0]["models"] if m in sets[0]["preds"]]
    if members:
        entry["per_model"] = {
            m: _summary([_right(s["preds"][m], s["labels"]) for s in sets]) for m in members
        }
    return entry


def _deltas(records: list[dict], names: list[str]) -> list[dict]:
    out = []
    for a, b in zip(names, names[1:]):
        before, after = [correct(r, a) for r in records], [correct(r, b) for r in records]
        p, lost, gained = mcnemar_exact(before, after)
        out.append(
            {
                "from": a,
                "to": b,
                **_delta(before, after),
                "mcnemar_p": p,
                "videos_lost": lost,
                "videos_gained": gained,
            }
        )
    return out


def build_benchmark(records: list[dict], plan: dict, seconds: dict | None = None) -> dict:
    """The benchmark.json content from the seeds' records (see the module doc)."""
    if not records:
        raise ValueError("no seed records")
    names = step_order(records)
    steps = [*_steps(records, names), _labelled_step(records, "normal_light_val")]
    extra_runs = {
        key: [_right(r["extras"][key][ENSEMBLE], r["test_labels"]) for r in records]
        for key in records[0].get("extras", {})
    }
    bench = {
        "plan": plan,
        "commit": git_commit(),
        "seeds": [r["seed"] for r in records],
        # the code each seed ran at (a seed's record is reused while the plan and recipe are unchanged)
        "seed_commits": {str(r["seed"]): r.get("commit") for r in records},
        "test_videos_per_seed": [len(r["test_names"]) for r in records],
        "models": records[0]["models"],
        "ci_method": CI_METHOD,
        "steps": steps,
        "deltas": _deltas(records, names),
        "extras": {k: _summary(v) for k, v in extra_runs.items()},
        "pattern": method_pattern(records, names, extra_runs),
        "pseudo_labels": _pseudo_quality(records),
    }
    optional = {
        "normal_light_final": (
            _labelled_step(records, "normal_light_final")
            if _all_have(records, "normal_light_final")
            else None
        ),
        "dark_gap_closed": dark_gap_closed(records, names),
        "controls": controls(records),
        "baselines": baselines(records),
        "original_recipe": original_recipe(records, names),
        "confusion": confusion(records, names),
        "dark_test_stats": dark_test_stats(records),
    }
    bench.update({k: v for k, v in optional.items() if v is not None})
    bench["checks"] = checks(bench)
    bench["seconds"] = seconds or {}
    return json_safe(bench)


def json_safe(x):
    """``x`` with NaN / inf as None and numpy scalars as Python ones, so that ``json.dumps`` writes valid JSON."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    return x


def _pseudo_quality(records: list[dict], key: str = "pseudo_labels") -> dict:
    return {stage: {str(r["seed"]): r[key][stage] for r in records} for stage in records[0].get(key, {})}


def dark_gap_closed(records: list[dict], names: list[str]) -> dict | None:
    """Per seed ``(final_vote - gamma_tta) / (reference - gamma_tta)`` in ensemble top-1, the reference being
    the final models on normal light (``normal_light_final``) where every record has them, else the
    source-only ones (``normal_light_val``). Measured from gamma_tta, not source_only, so that the gamma
    lookup table (no learning) does not count as gap closed. A seed whose reference is not above gamma_tta
    has no gap: its value is None, it is left out of the mean and ``note`` says so."""
    if "gamma_tta" not in names or "final_vote" not in names:
        return None
    ref = "normal_light_final" if _all_have(records, "normal_light_final") else "normal_light_val"
    per_seed, no_gap = [], []
    for r in records:
        gamma, final = correct(r, "gamma_tta").mean(), correct(r, "final_vote").mean()
        level = _right(r[ref]["preds"][ENSEMBLE], r[ref]["labels"]).mean()
        if level - gamma <= 0:
            per_seed.append(None)
            no_gap.append(r["seed"])
        else:
            per_seed.append(float((final - gamma) / (level - gamma)))
    valid = [v for v in per_seed if v is not None]
    out = {
        "from": "gamma_tta",
        "reference": ref,
        "per_seed": per_seed,
        "mean": float(np.mean(valid)) if valid else None,
        "t95": t_interval(valid).as_list() if valid else [None, None],
    }
    if no_gap:
        out["note"] = (
            f"seed(s) {', '.join(map(str, no_gap))}: {ref} top-1 <= gamma_tta's, no gap to close; "
            "null and left out of the mean"
        )
    return out


def controls(records: list[dict]) -> dict | None:
    """``{member: {kind: summary}}`` of the normal-light controls (frames as sampled, shuffled, one frame)."""
    if not _all_have(records, "controls"):
        return None
    kinds = [k for k in CONTROL_KINDS if k in records[0]["controls"]["preds"]]
    if not kinds:
        return None
    first = records[0]["controls"]["preds"]
    out = {}
    for m in first[kinds[0]]:
        out[m] = {
            k: _summary([_right(r["controls"]["preds"][k][m], r["controls"]["labels"]) for r in records])
            for k in kinds
            if m in first[k]
        }
    return out


def baselines(records: list[dict]) -> dict | None:
    """The one-frame linear probe on normal light and on the dark test videos, and chance (1 / classes)."""
    if not all("one_frame_probe" in (r.get("baselines") or {}) for r in records):
        return None
    probes = [r["baselines"]["one_frame_probe"] for r in records]
    return {
        "one_frame_probe": {
            "normal_light": _summary(
                [_right(p["normal_light"]["preds"], p["normal_light"]["labels"]) for p in probes]
            ),
            "dark_test": _summary(
                [_right(p["dark_test"]["preds"], r["test_labels"]) for p, r in zip(probes, records)]
            ),
            "chance": 1 / len(records[0]["class_names"]),
        }
    }


def original_recipe(records: list[dict], names: list[str]) -> dict | None:
    """The original's recipe on the same seeds and test videos: its steps, and ours - original for every step
    name both have (paired on the same videos)."""
    if not _all_have(records, "original_recipe"):
        return None
    theirs = [{**r, "steps": r["original_recipe"]["steps"]} for r in records]
    their_names = step_order(theirs)
    versus = []
    for name in (n for n in their_names if n in names):
        d = _delta([correct(r, name) for r in theirs], [correct(r, name) for r in records])
        versus.append(
            {
                "step": name,
                "ours_mean": float(np.mean([correct(r, name).mean() for r in records])),
                "original_mean": float(np.mean([correct(r, name).mean() for r in theirs])),
                "delta_mean": d["mean"],
                "delta_ci95": d["ci95"],
                "delta_t95": d["t95"],
                "sign_flip_p": d["sign_flip_p"],
                "per_seed": d["per_seed"],
            }
        )
    out = {"steps": _steps(theirs, their_names), "versus_ours": versus}
    if all("pseudo_labels" in r["original_recipe"] for r in records):
        out["pseudo_labels"] = _pseudo_quality(
            [{"seed": r["seed"], "pseudo_labels": r["original_recipe"]["pseudo_labels"]} for r in records]
        )
    return out


def confusion(records: list[dict], names: list[str]) -> dict | None:
    """Ensemble confusion matrices of adapt_bn and final_vote (rows true class, columns predicted, counts summed
    over seeds), per-class recall (None for a class without test videos), and the counts of the pairs that a
    model without time order (Sit / Stand) or speed (Walk / Run) confuses: ``a_to_b`` true a predicted b."""
    steps = [s for s in CONFUSION_STEPS if s in names]
    if not steps or not _all_have(records, "class_names"):
        return None
    classes = list(records[0]["class_names"])
    if any(list(r["class_names"]) != classes for r in records):
        raise ValueError("the seeds' records name different classes")
    pairs = {
        kind: [[a, b] for a, b in ps if a in classes and b in classes]
        for kind, ps in CONFUSABLE_PAIRS.items()
    }
    out = {}
    for step in steps:
        m = np.zeros((len(classes), len(classes)), dtype=np.int64)
        for r in records:
            np.add.at(m, (np.asarray(r["test_labels"]), np.asarray(r["steps"][step][ENSEMBLE])), 1)
        rows = m.sum(1)
        out[step] = {
            "class_names": classes,
            "matrix": m.tolist(),
            "per_class_recall": [float(m[i, i] / n) if n else None for i, n in enumerate(rows)],
            "pair_confusion": [
                {
                    "kind": kind,
                    "pair": [a, b],
                    "a_to_b": int(m[classes.index(a), classes.index(b)]),
                    "b_to_a": int(m[classes.index(b), classes.index(a)]),
                }
                for kind, ps in pairs.items()
                for a, b in ps
            ],
        }
    out["pairs"] = pairs
    return out


def dark_test_stats(records: list[dict]) -> dict | None:
    """The seeds' dark-test brightness statistics as recorded, and their per-channel mean over seeds."""
    if not _all_have(records, "dark_test_stats"):
        return None
    stats = [r["dark_test_stats"] for r in records]
    keys = [k for k in ("mean", "std", "std_over_mean") if all(k in s for s in stats)]
    return {
        "per_seed": [{"seed": r["seed"], **s} for r, s in zip(records, stats)],
        "mean_over_seeds": {k: np.mean([s[k] for s in stats], axis=0).tolist() for k in keys},
    }


def _check(name: str, holds: bool, value, threshold, per_seed=None, **more) -> dict:
    out = {"name": name, "holds": bool(holds), "value": value, "threshold": threshold, **more}
    if per_seed is not None:
        out["per_seed"] = per_seed
    return out


def checks(bench: dict) -> list[dict]:
    """The benchmark's sanity checks, each ``{"name", "holds", "value", "threshold", "per_seed"?}``, from the
    sections of ``bench``; a check whose section is missing is left out (see :func:`_control_checks`,
    :func:`_darkness_check`, :func:`_pattern_checks`)."""
    return [*_control_checks(bench), *_darkness_check(bench), *_pattern_checks(bench)]


def _control_checks(bench: dict) -> list[dict]:
    """probe_near_chance: the one-frame probe within 8 points of chance on normal light on every seed (value:
    the largest distance); shuffled_frames_drop: the ensemble at least 20 points below as-sampled with its
    frames shuffled, every seed (value: the smallest drop); normal_light_level: the ensemble's as-sampled
    normal-light top-1 >= 75 % on every seed (value: the lowest)."""
    out = []
    probe = (bench.get("baselines") or {}).get("one_frame_probe")
    if probe:
        dist = [abs(x - probe["chance"]) for x in probe["normal_light"]["top1_per_seed"]]
        out.append(_check("probe_near_chance", max(dist) <= 0.08 + TOLERANCE, max(dist), 0.08, dist))
    ens = (bench.get("controls") or {}).get(ENSEMBLE, {})
    if "as_sampled" in ens and "shuffled_frames" in ens:
        pairs = zip(ens["as_sampled"]["top1_per_seed"], ens["shuffled_frames"]["top1_per_seed"])
        drop = [a - s for a, s in pairs]
        out.append(_check("shuffled_frames_drop", min(drop) >= 0.20 - TOLERANCE, min(drop), 0.20, drop))
    if "as_sampled" in ens:
        level = ens["as_sampled"]["top1_per_seed"]
        out.append(_check("normal_light_level", min(level) >= 0.75 - TOLERANCE, min(level), 0.75, level))
    return out


def _darkness_check(bench: dict) -> list[dict]:
    """arid_like_darkness: on every seed, every channel's mean brightness in [0.05, 0.11] and its std / mean
    >= 1.0 (value: the range of the channel means and the lowest std / mean over seeds)."""
    stats = (bench.get("dark_test_stats") or {}).get("per_seed")
    if not stats or not all("mean" in s and "std_over_mean" in s for s in stats):
        return []
    per_seed = [all(0.05 <= m <= 0.11 for m in s["mean"]) and min(s["std_over_mean"]) >= 1.0 for s in stats]
    means = [m for s in stats for m in s["mean"]]
    value = {
        "channel_mean_range": [min(means), max(means)],
        "min_std_over_mean": min(x for s in stats for x in s["std_over_mean"]),
    }
    threshold = {"channel_mean": [0.05, 0.11], "std_over_mean": 1.0}
    return [_check("arid_like_darkness", all(per_seed), value, threshold, per_seed)]


def _pattern_checks(bench: dict) -> list[dict]:
    """pattern_on_mean:<b>-<a>: on the mean top-1, gamma_tta > source_only, adapt_bn > gamma_tta, the last
    pseudo stage >= adapt_bn + 3 points, final_vote >= the last stage - 2 points (value: mean b - mean a;
    per seed: b - a)."""
    steps = {s["name"]: s for s in bench["steps"]}
    stages = [n for n in steps if n.startswith("pseudo_stage")]
    rules = [("source_only", "gamma_tta", ">", 0.0), ("gamma_tta", "adapt_bn", ">", 0.0)]
    if stages:
        rules += [("adapt_bn", stages[-1], ">=", 0.03), (stages[-1], "final_vote", ">=", -0.02)]
    out = []
    for a, b, rel, margin in rules:
        if a not in steps or b not in steps:
            continue
        value = steps[b]["top1_mean"] - steps[a]["top1_mean"]
        holds = value > margin + TOLERANCE if rel == ">" else value >= margin - TOLERANCE
        per_seed = [y - x for x, y in zip(steps[a]["top1_per_seed"], steps[b]["top1_per_seed"])]
        claim = f"{b} {rel} {a}" + (f" {100 * margin:+.0f} points" if margin else "")
        out.append(_check(f"pattern_on_mean:{b}-{a}", holds, value, margin, per_seed, claim=claim))
    return out


def method_pattern(records: list[dict], names: list[str], extra_runs: dict) -> list[dict]:
    """The known pattern of the method, each relation as a paired delta: gamma > no gamma, adapt BN > source-only,
    every pseudo stage >= the one before, the vote >= each of its modes (the ensembles it votes over).

    ``holds``: the mean delta lies on the claimed side (> 0, or >= 0); ``resolved``: the paired bootstrap
    interval excludes 0 (lo > 0), the only case in which the data shows a gain: for a ">=" relation an
    unresolved entry is level within the noise, not shown to be above; ``within_ci``: the interval reaches
    the claimed side."""
    runs = {n: [correct(r, n) for r in records] for n in names}
    runs.update(extra_runs)
    pairs = [
        ("source_only", "gamma_tta", ">"),
        ("source_only", "adapt_bn", ">"),
        ("gamma_tta", "adapt_bn", ">"),
    ]
    stages = [n for n in names if n.startswith("pseudo_stage")]
    pairs += [(a, b, ">=") for a, b in zip(["adapt_bn", *stages], stages)]
    pairs += [(m, "final_vote", ">=") for m in extra_runs if m.startswith("vote_mode_")]
    out = []
    for a, b, rel in pairs:
        if a not in runs or b not in runs:
            continue
        d = _delta(runs[a], runs[b])
        hi = d["ci95"][1]
        strict = rel == ">"
        out.append(
            {
                "claim": f"{b} {rel} {a}",
                **d,
                "holds": bool(d["mean"] > 0 if strict else d["mean"] >= 0),
                "resolved": bool(d["ci95"][0] > 0),
                "within_ci": bool(hi > 0 if strict else hi >= 0),
            }
        )
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _pts(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def _iv(bounds: list, fmt=_pct) -> str:
    """``[lo, hi]`` in percent (or signed points with ``fmt=_pts``); ``[n/a]`` when undefined (one seed)."""
    lo, hi = bounds
    return "[n/a]" if lo is None or hi is None else f"[{fmt(lo)}, {fmt(hi)}]"


def _level(s: dict) -> str:
    """``mean [t interval]`` of a summary."""
    return f"{_pct(s['top1_mean'])} {_iv(s['top1_t95'])}"


def _p(p: float) -> str:
    return f"{p:.2g}"


def _per_seed(values: list, fmt=_pct) -> str:
    return " / ".join(fmt(x) for x in values)


def _steps_table(bench: dict) -> list[str]:
    models = bench["models"]
    lines = [
        "| step | top-1 mean [95 % t] | bootstrap 95 % | per seed | " + " | ".join(models) + " |",
        "|---|---:|---:|---|" + "---:|" * len(models),
    ]
    rows = [*bench["steps"], *([bench["normal_light_final"]] if "normal_light_final" in bench else [])]
    for s in rows:
        cells = [_level(s["per_model"][m]) if m in s.get("per_model", {}) else "" for m in models]
        lines.append(
            f"| `{s['name']}` | **{_pct(s['top1_mean'])}** {_iv(s['top1_t95'])} | {_iv(s['top1_ci95'])} | "
            f"{_per_seed(s['top1_per_seed'])} | " + " | ".join(cells) + " |"
        )
    return lines


def _deltas_table(bench: dict) -> list[str]:
    lines = [
        "",
        "| from -> to | delta (points) [bootstrap 95 %] | t 95 % | sign-flip p | per seed | videos lost / gained "
        "(McNemar p, video-level) |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for d in bench["deltas"]:
        lines.append(
            f"| `{d['from']}` -> `{d['to']}` | {_pts(d['mean'])} {_iv(d['ci95'], _pts)} | {_iv(d['t95'], _pts)} | "
            f"{_p(d['sign_flip_p'])} | {_per_seed(d['per_seed'], _pts)} | {d['videos_lost']} / "
            f"{d['videos_gained']} ({_p(d['mcnemar_p'])}) |"
        )
    return lines


def _extras_and_pseudo(bench: dict) -> list[str]:
    lines = []
    if bench.get("extras"):
        lines += ["", "| variant | top-1 mean [95 % t] | bootstrap 95 % |", "|---|---:|---:|"]
        for k, v in bench["extras"].items():
            lines.append(f"| `{k}` | {_level(v)} | {_iv(v['top1_ci95'])} |")
    for title, pseudo in [
        ("pseudo labels", bench.get("pseudo_labels")),
        ("original's pseudo labels", (bench.get("original_recipe") or {}).get("pseudo_labels")),
    ]:
        if pseudo:
            lines += ["", f"| {title} | rows (per seed) | precision | recall |", "|---|---|---:|---:|"]
            for stage, per in pseudo.items():
                rows = " / ".join(str(v["rows"]) for v in per.values())
                prec = np.mean([v["precision"] for v in per.values()])
                rec = np.mean([v["recall"] for v in per.values()])
                lines.append(f"| {stage} | {rows} | {_pct(prec)} % | {_pct(rec)} % |")
    return lines


def _pattern_table(bench: dict) -> list[str]:
    if not bench.get("pattern"):
        return []
    lines = [
        "",
        "The method's known pattern: a relation is resolved only when its paired bootstrap interval excludes 0; "
        "otherwise the data show the mean's direction, not the relation.",
        "",
        "| relation | delta (points) [bootstrap 95 %] | sign-flip p | mean in that direction | resolved |",
        "|---|---:|---:|:---:|:---:|",
    ]
    for c in bench["pattern"]:
        lines.append(
            f"| {c['claim']} | {_pts(c['mean'])} {_iv(c['ci95'], _pts)} | {_p(c['sign_flip_p'])} | "
            f"{'yes' if c['holds'] else 'no'} | {'yes' if c['resolved'] else 'no'} |"
        )
    return lines


def _original_tables(bench: dict) -> list[str]:
    orig = bench.get("original_recipe")
    if not orig:
        return []
    lines = ["", "| original's recipe | top-1 mean [95 % t] | per seed |", "|---|---:|---|"]
    for s in orig["steps"]:
        lines.append(f"| `{s['name']}` | {_level(s)} | {_per_seed(s['top1_per_seed'])} |")
    if orig["versus_ours"]:
        lines += [
            "",
            "| same step | ours | original | ours - original (points) [bootstrap 95 %] | t 95 % | sign-flip p |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for v in orig["versus_ours"]:
            lines.append(
                f"| `{v['step']}` | {_pct(v['ours_mean'])} | {_pct(v['original_mean'])} | {_pts(v['delta_mean'])} "
                f"{_iv(v['delta_ci95'], _pts)} | {_iv(v['delta_t95'], _pts)} | {_p(v['sign_flip_p'])} |"
            )
    return lines


def _controls_tables(bench: dict) -> list[str]:
    lines = []
    if bench.get("controls"):
        lines += [
            "",
            "| normal-light control, top-1 [95 % t] | frames as sampled | shuffled in time | one frame repeated |",
            "|---|---:|---:|---:|",
        ]
        for m, kinds in bench["controls"].items():
            cells = [_level(kinds[k]) if k in kinds else "" for k in CONTROL_KINDS]
            lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    probe = (bench.get("baselines") or {}).get("one_frame_probe")
    if probe:
        lines += [
            "",
            f"| one-frame linear probe (chance {_pct(probe['chance'])} %) | top-1 mean [95 % t] | per seed |",
            "|---|---:|---|",
        ]
        for k in ("normal_light", "dark_test"):
            lines.append(f"| {k} | {_level(probe[k])} | {_per_seed(probe[k]['top1_per_seed'])} |")
    return lines


def _gap_lines(bench: dict) -> list[str]:
    gap = bench.get("dark_gap_closed")
    if not isinstance(gap, dict):
        return []
    line = (
        f"Dark gap closed from {gap['from']}: (final_vote - {gap['from']}) / ({gap['reference']} - "
        f"{gap['from']}), mean {_pct(gap['mean'])} % {_iv(gap['t95'])} (95 % t), per seed "
        f"{_per_seed(gap['per_seed'])}."
    )
    return ["", line + (f" Note: {gap['note']}." if gap.get("note") else "")]


def _rgb(v: list) -> str:
    return " / ".join(f"{x:.3f}" for x in v)


def _darkness_table(bench: dict) -> list[str]:
    stats = bench.get("dark_test_stats")
    if not stats:
        return []
    lines = ["", "| dark test videos | mean r / g / b | std r / g / b | std / mean r / g / b | videos |"]
    lines.append("|---|---:|---:|---:|---:|")
    rows = [(f"seed {s['seed']}", s) for s in stats["per_seed"]] + [
        ("mean over seeds", stats["mean_over_seeds"])
    ]
    for label, s in rows:
        cells = [_rgb(s[k]) if k in s else "" for k in ("mean", "std", "std_over_mean")]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {s.get('videos', '')} |")
    return lines


def _confusion_table(bench: dict) -> list[str]:
    conf = bench.get("confusion")
    if not conf:
        return []
    steps = [s for s in CONFUSION_STEPS if s in conf]
    classes = conf[steps[0]]["class_names"]
    pairs = conf[steps[0]]["pair_confusion"]
    head = ["per-class recall, " + c for c in classes] + [
        f"{p['pair'][0]} -> {p['pair'][1]} / back" for p in pairs
    ]
    lines = ["", "| ensemble, seeds summed | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for s in steps:
        recall = [_pct(x) for x in conf[s]["per_class_recall"]]
        counts = [f"{p['a_to_b']} / {p['b_to_a']}" for p in conf[s]["pair_confusion"]]
        lines.append(f"| `{s}` | " + " | ".join(recall + counts) + " |")
    return lines


def _checks_table(bench: dict) -> list[str]:
    if not bench.get("checks"):
        return []
    lines = ["", "| check | holds | value | threshold |", "|---|:---:|---:|---:|"]
    for c in bench["checks"]:
        lines.append(
            f"| {c.get('claim', c['name'])} | {'yes' if c['holds'] else 'no'} | {_fmt(c['value'])} | "
            f"{_fmt(c['threshold'])} |"
        )
    return lines


def _fmt(x) -> str:
    if isinstance(x, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in x.items())
    if isinstance(x, list):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _wall_time(bench: dict) -> list[str]:
    secs = bench.get("seconds") or {}
    if not secs.get("total"):
        return []
    line = f"Wall time: {secs['total'] / 60:.1f} min"
    reused = secs.get("reused_seeds") or []
    if reused:
        took = " / ".join(f"{secs[f'seed_{s}'] / 60:.1f}" for s in reused if f"seed_{s}" in secs)
        line += (
            f" (seed{'s' if len(reused) > 1 else ''} {', '.join(map(str, reused))} reused from an earlier "
        )
        line += f"run, where {'they' if len(reused) > 1 else 'it'} took {took} min)"
    return ["", line + "."]


def benchmark_markdown(bench: dict) -> str:
    """benchmark.md: every figure with its interval (the seed-level t interval first, the bootstrap beside)."""
    n = bench["test_videos_per_seed"]
    commit = bench.get("commit")
    lines = [
        f"Seeds {', '.join(map(str, bench['seeds']))}; {n[0]} dark test videos per seed; models "
        f"{', '.join(bench['models'])}"
        + (
            f"; commit {commit['sha'][:12]}{' (dirty work tree)' if commit['dirty'] else ''}."
            if commit
            else "."
        ),
        f"Intervals: {bench['ci_method']}.",
        "",
    ]
    for section in (
        _steps_table,
        _deltas_table,
        _extras_and_pseudo,
        _pattern_table,
        _original_tables,
        _controls_tables,
        _gap_lines,
        _darkness_table,
        _confusion_table,
        _checks_table,
        _wall_time,
    ):
        lines += section(bench)
    return "\n".join(lines) + "\n"


README_TABLE_START = "<!-- benchmark table: written by tools/benchmark_method.py --publish; do not edit -->"
README_TABLE_END = "<!-- end of benchmark table -->"


def readme_table(bench: dict) -> str:
    """The README's benchmark table (between its two markers): per step, our ensemble's and the original
    recipe's dark-test top-1 (mean over seeds, seed-level 95 % t interval) and ours - original paired by seed."""
    orig = bench.get("original_recipe") or {"steps": [], "versus_ours": []}
    theirs = {s["name"]: s for s in orig["steps"]}
    versus = {v["step"]: v for v in orig["versus_ours"]}
    commit = bench.get("commit") or {}
    n = bench["test_videos_per_seed"]
    lines = [
        README_TABLE_START,
        f"Seeds {', '.join(map(str, bench['seeds']))} ({n[0]} dark test videos each), commit "
        f"{str(commit.get('sha', 'unknown'))[:12]}{' (dirty)' if commit.get('dirty') else ''}: ensemble top-1 %, "
        "mean over seeds [95 % t interval over seeds].",
        "",
        "| step | ours | per seed | original recipe | ours - original, points [95 % t] | sign-flip p |",
        "|---|---:|---|---:|---:|---:|",
    ]
    rows = [*bench["steps"], *([bench["normal_light_final"]] if "normal_light_final" in bench else [])]
    for s in rows:
        name = s["name"]
        t, v = theirs.get(name), versus.get(name)
        lines.append(
            f"| `{name}` | **{_pct(s['top1_mean'])}** {_iv(s['top1_t95'])} | {_per_seed(s['top1_per_seed'])} | "
            + (_level(t) if t else "")
            + " | "
            + (
                f"{_pts(v['delta_mean'])} {_iv(v['delta_t95'], _pts)} | {_p(v['sign_flip_p'])}"
                if v
                else " | "
            )
            + " |"
        )
    lines.append(README_TABLE_END)
    return "\n".join(lines) + "\n"


def _save_figure(fig, path: Path) -> None:
    """Writes ``fig`` as a PNG to ``path`` atomically and closes it."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_benchmark(bench: dict, path: Path) -> None:
    """benchmark.png: dark-test top-1 per step (ensemble and each model), mean and bootstrap 95 % interval, with
    the normal-light levels as horizontal lines."""
    plt = _pyplot()
    normal = ("normal_light_val", "normal_light_final")
    steps = [s for s in bench["steps"] if s["name"] not in normal]
    x = np.arange(len(steps))
    fig, ax = plt.subplots(figsize=(1.3 * len(steps) + 3, 4.5))

    def line(entries, label, style, colour):
        mean = np.array([100 * e["top1_mean"] for e in entries])
        lo = np.array([100 * e["top1_ci95"][0] for e in entries])
        hi = np.array([100 * e["top1_ci95"][1] for e in entries])
        xs = x[: len(entries)]
        ax.errorbar(xs, mean, yerr=[mean - lo, hi - mean], fmt=style, color=colour, capsize=3, label=label)

    colours = ["#4c72b0", "#55a868", "#8172b2", "#c44e52"]
    for i, m in enumerate(bench["models"]):
        entries = [s["per_model"][m] for s in steps if "per_model" in s and m in s["per_model"]]
        line(entries, m, "o--", colours[i % len(colours)])
    line(steps, "ensemble (averaged probabilities; last: vote)", "s-", "black")
    levels = [s for s in bench["steps"] if s["name"] in normal] + (
        [bench["normal_light_final"]] if "normal_light_final" in bench else []
    )
    for s, colour in zip(levels, ["#dd8452", "#937860"]):
        label = f"{s['name'].replace('_', ' ')} ({_pct(s['top1_mean'])} %)"
        ax.axhline(100 * s["top1_mean"], color=colour, ls=":", label=label)
    ax.set_xticks(x, [s["name"] for s in steps], rotation=20, ha="right")
    ax.set_ylabel("dark-test top-1 (%), mean and 95 % CI")
    ax.set_ylim(0, 105)
    ax.set_title(
        f"Nightcrawler method benchmark: {len(bench['seeds'])} seeds x {bench['test_videos_per_seed'][0]} dark test videos"
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_confusion(bench: dict, path: Path) -> None:
    """confusion.png: the ensemble confusion matrices of ``bench["confusion"]`` (adapt_bn, final_vote) side by
    side, counts summed over seeds in the cells, true class down, predicted class across."""
    plt = _pyplot()
    conf = bench["confusion"]
    steps = [s for s in CONFUSION_STEPS if s in conf]
    classes = conf[steps[0]]["class_names"]
    size = 0.55 * len(classes) + 2.5
    fig, axes = plt.subplots(1, len(steps), figsize=(size * len(steps), size), squeeze=False)
    for ax, step in zip(axes[0], steps):
        m = np.asarray(conf[step]["matrix"])
        ax.imshow(m, cmap="Blues", vmin=0, vmax=max(int(m.max()), 1))
        for (i, j), count in np.ndenumerate(m):
            colour = "white" if count > m.max() / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=8)
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, classes, rotation=45, ha="right")
        ax.set_yticks(ticks, classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{step} (ensemble, {len(bench['seeds'])} seeds summed)")
    fig.tight_layout()
    _save_figure(fig, path)


def write_benchmark(bench: dict, out_dir: Path) -> None:
    """benchmark.json / .md / .png into ``out_dir``, and confusion.json / .png where ``bench`` has the section."""
    out_dir = Path(out_dir)
    bench = json_safe(bench)
    atomic_write_text(out_dir / "benchmark.json", json.dumps(bench, indent=1, allow_nan=False) + "\n")
    atomic_write_text(out_dir / "benchmark.md", benchmark_markdown(bench))
    plot_benchmark(bench, out_dir / "benchmark.png")
    if bench.get("confusion"):
        atomic_write_text(out_dir / "confusion.json", json.dumps(bench["confusion"], indent=1) + "\n")
        plot_confusion(bench, out_dir / "confusion.png")
