"""Turns the per-seed records of :class:`nightcrawler.method.pipeline.SeedRun` into the benchmark's
``benchmark.json``, ``benchmark.md`` and ``benchmark.png``.

Every figure is computed from the records: a step's top-1 per seed is the fraction of that seed's test videos
it classified right, its mean is the mean over seeds, its interval the two-level bootstrap of
:mod:`nightcrawler.method.stats`; a delta pairs two steps on the same videos and seeds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from nightcrawler.method.pipeline import ENSEMBLE
from nightcrawler.method.stats import mcnemar_exact, paired_delta_interval, top1_interval
from nightcrawler.utils.io import atomic_write_text

CI_METHOD = (
    "95 % two-level bootstrap (seeds with replacement, then videos with replacement within each seed; "
    "4000 draws, percentile interval); deltas paired on the same draw; McNemar exact test on the discordant "
    "videos pooled over seeds"
)


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


def _summary(runs: list[np.ndarray]) -> dict:
    ci = top1_interval(runs)
    return {"top1_per_seed": [float(r.mean()) for r in runs], "top1_mean": ci.mean, "top1_ci95": ci.as_list()}


def build_benchmark(records: list[dict], plan: dict, seconds: dict | None = None) -> dict:
    """The benchmark.json content from the seeds' records (see the module doc)."""
    if not records:
        raise ValueError("no seed records")
    names = step_order(records)
    models = records[0]["models"]
    steps = []
    for name in names:
        entry = {"name": name, **_summary([correct(r, name) for r in records])}
        members = [m for m in models if m in records[0]["steps"][name]]
        if members:
            entry["per_model"] = {m: _summary([correct(r, name, m) for r in records]) for m in members}
        steps.append(entry)
    val_runs = [
        np.asarray(r["normal_light_val"]["preds"][ENSEMBLE]) == np.asarray(r["normal_light_val"]["labels"])
        for r in records
    ]
    steps.append({"name": "normal_light_val", **_summary(val_runs)})
    deltas = []
    for a, b in zip(names, names[1:]):
        before, after = [correct(r, a) for r in records], [correct(r, b) for r in records]
        d = paired_delta_interval(before, after)
        p, lost, gained = mcnemar_exact(before, after)
        deltas.append(
            {
                "from": a,
                "to": b,
                "mean": d.mean,
                "ci95": d.as_list(),
                "mcnemar_p": p,
                "videos_lost": lost,
                "videos_gained": gained,
            }
        )
    extras = {}
    extra_runs = {}
    for key in records[0].get("extras", {}):
        extra_runs[key] = [
            np.asarray(r["extras"][key][ENSEMBLE]) == np.asarray(r["test_labels"]) for r in records
        ]
        extras[key] = _summary(extra_runs[key])
    pattern = method_pattern(records, names, extra_runs)
    pseudo = {
        stage: {str(r["seed"]): r["pseudo_labels"][stage] for r in records}
        for stage in records[0]["pseudo_labels"]
    }
    gap = steps[-1]["top1_mean"] - steps[0]["top1_mean"]
    closed = (steps[-2]["top1_mean"] - steps[0]["top1_mean"]) / gap if gap > 0 else float("nan")
    return {
        "plan": plan,
        "seeds": [r["seed"] for r in records],
        "test_videos_per_seed": [len(r["test_names"]) for r in records],
        "models": models,
        "ci_method": CI_METHOD,
        "steps": steps,
        "deltas": deltas,
        "extras": extras,
        "pattern": pattern,
        "pseudo_labels": pseudo,
        "dark_gap_closed": closed,
        "seconds": seconds or {},
    }


def method_pattern(records: list[dict], names: list[str], extra_runs: dict) -> list[dict]:
    """The known pattern of the method, each relation as a paired delta: gamma > no gamma, adapt BN > source-only,
    every pseudo stage >= the one before, the vote >= each of its modes (the ensembles it votes over)."""
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
        d = paired_delta_interval(runs[a], runs[b])
        holds = d.mean > 0 if rel == ">" else d.mean >= 0
        out.append(
            {
                "claim": f"{b} {rel} {a}",
                "mean": d.mean,
                "ci95": d.as_list(),
                "holds": bool(holds),
                "within_ci": bool(d.hi > 0 if rel == ">" else d.hi >= 0),
            }
        )
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def benchmark_markdown(bench: dict) -> str:
    seeds = ", ".join(map(str, bench["seeds"]))
    n = bench["test_videos_per_seed"]
    lines = [
        f"Seeds {seeds}; {n[0]} dark test videos per seed; models {', '.join(bench['models'])}.",
        f"Intervals: {bench['ci_method']}.",
        "",
        "| step | top-1 mean [95 % CI] | per seed | " + " | ".join(bench["models"]) + " |",
        "|---|---:|---|" + "---:|" * len(bench["models"]),
    ]
    for s in bench["steps"]:
        per_seed = " / ".join(_pct(x) for x in s["top1_per_seed"])
        cells = []
        for m in bench["models"]:
            pm = s.get("per_model", {}).get(m)
            cells.append(
                f"{_pct(pm['top1_mean'])} [{_pct(pm['top1_ci95'][0])}, {_pct(pm['top1_ci95'][1])}]"
                if pm
                else ""
            )
        lo, hi = s["top1_ci95"]
        lines.append(
            f"| `{s['name']}` | **{_pct(s['top1_mean'])}** [{_pct(lo)}, {_pct(hi)}] | {per_seed} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "| from -> to | delta (points) [95 % CI] | videos lost / gained | McNemar p |",
        "|---|---:|---:|---:|",
    ]
    for d in bench["deltas"]:
        lines.append(
            f"| `{d['from']}` -> `{d['to']}` | {100 * d['mean']:+.1f} [{100 * d['ci95'][0]:+.1f}, "
            f"{100 * d['ci95'][1]:+.1f}] | {d['videos_lost']} / {d['videos_gained']} | {d['mcnemar_p']:.2g} |"
        )
    if bench.get("extras"):
        lines += ["", "| variant | top-1 mean [95 % CI] |", "|---|---:|"]
        for k, v in bench["extras"].items():
            lines.append(
                f"| `{k}` | {_pct(v['top1_mean'])} [{_pct(v['top1_ci95'][0])}, {_pct(v['top1_ci95'][1])}] |"
            )
    if bench.get("pseudo_labels"):
        lines += ["", "| pseudo labels | rows (per seed) | precision | recall |", "|---|---|---:|---:|"]
        for stage, per in bench["pseudo_labels"].items():
            rows = " / ".join(str(v["rows"]) for v in per.values())
            prec = np.mean([v["precision"] for v in per.values()])
            rec = np.mean([v["recall"] for v in per.values()])
            lines.append(f"| {stage} | {rows} | {_pct(prec)} % | {_pct(rec)} % |")
    if bench.get("pattern"):
        lines += [
            "",
            "| the method's known pattern | delta (points) [95 % CI] | holds (mean) |",
            "|---|---:|:---:|",
        ]
        for c in bench["pattern"]:
            lo, hi = c["ci95"]
            lines.append(
                f"| {c['claim']} | {100 * c['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] | "
                f"{'yes' if c['holds'] else 'no'} |"
            )
    closed = bench.get("dark_gap_closed")
    if closed is not None and np.isfinite(closed):
        lines += [
            "",
            f"Dark gap closed (final vote vs source-only, relative to normal-light val): {_pct(closed)} %.",
        ]
    secs = bench.get("seconds") or {}
    if secs.get("total"):
        line = f"Wall time: {secs['total'] / 60:.1f} min"
        reused = secs.get("reused_seeds") or []
        if reused:
            took = " / ".join(f"{secs[f'seed_{s}'] / 60:.1f}" for s in reused if f"seed_{s}" in secs)
            line += f" (seed{'s' if len(reused) > 1 else ''} {', '.join(map(str, reused))} reused from an earlier "
            line += f"run, where {'they' if len(reused) > 1 else 'it'} took {took} min)"
        lines.append(line + ".")
    return "\n".join(lines) + "\n"


def plot_benchmark(bench: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s for s in bench["steps"] if s["name"] != "normal_light_val"]
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
    val = next(s for s in bench["steps"] if s["name"] == "normal_light_val")
    ax.axhline(
        100 * val["top1_mean"],
        color="#dd8452",
        ls=":",
        label=f"normal-light val ({_pct(val['top1_mean'])} %)",
    )
    ax.set_xticks(x, [s["name"] for s in steps], rotation=20, ha="right")
    ax.set_ylabel("dark-test top-1 (%), mean and 95 % CI")
    ax.set_ylim(0, 105)
    ax.set_title(
        f"Nightcrawler method benchmark: {len(bench['seeds'])} seeds x {bench['test_videos_per_seed'][0]} dark test videos"
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_benchmark(bench: dict, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "benchmark.json", json.dumps(bench, indent=1) + "\n")
    atomic_write_text(out_dir / "benchmark.md", benchmark_markdown(bench))
    plot_benchmark(bench, out_dir / "benchmark.png")
