"""The whole method on one synthetic seed, through the project's entry points, scored on the hidden labels.

Steps (each scored on the dark test videos: every model alone and their averaged probabilities):

  source_only    supervised weights (from the source pre-training when the plan has it) with BN statistics of
                 the normal-light training clips, no gamma
  gamma_tta      the same weights, gamma-corrected test frames
  adapt_bn       BN statistics re-estimated on the unlabelled dark videos (every epoch, the recipe's), gamma TTA
  pseudo_stageK  each pseudo-label stage's models (the last one with the plan's views x crops)
  final_vote     the vote script's submission CSV (1x1 and the last stage's TTA as its modes)

plus ``normal_light_val``: the source-only weights on held-out normal-light videos, no gamma. A seed's record
keeps, per step and member, the predicted class of every test video, so that intervals and paired
comparisons can be computed from the runs themselves (:mod:`nightcrawler.method.stats`).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import yaml

from nightcrawler.method.plan import MethodPlan
from nightcrawler.method.runner import REPO, Runner, overrides
from nightcrawler.pseudo.fuse import softmax
from nightcrawler.pseudo.io import align_outputs, load_pkl, read_labelled_list, read_pseudo_csv
from nightcrawler.pseudo.io import pkl_file_name as pkl_name

ROLES = {"Uniformer": "uniformer", "SF": "slowfast", "MViT": "mvit"}
ENSEMBLE = "ensemble"


def member_predictions(paths: dict[str, Path], names: list[str]) -> dict[str, list[int]]:
    """Predicted class per video (in the order of ``names``) of each model and of their averaged probabilities."""
    aligned = align_outputs(
        {m: load_pkl(p) for m, p in paths.items()}, order=names, order_source="the scored videos"
    )
    probs = {m: softmax(aligned.preds[m], np.float64) for m in paths}
    preds = {m: p.argmax(1).tolist() for m, p in probs.items()}
    preds[ENSEMBLE] = np.mean(list(probs.values()), 0).argmax(1).tolist()
    return preds


def pseudo_label_quality(csv_path: Path, hidden: dict[str, int], num_classes: int) -> dict:
    """Rows, precision (right rows / rows) and recall (right rows / unlabelled videos) of a pseudo-label CSV,
    and its rows per pseudo class (the balance the next stage trains on)."""
    names, labels, _ = read_pseudo_csv(csv_path)
    right = sum(int(labels[i]) == hidden[n] for i, n in enumerate(names))
    per_class = (
        np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).tolist() if names else []
    )
    return {
        "rows": len(names),
        "precision": right / len(names) if names else 0.0,
        "recall": right / len(hidden) if hidden else 0.0,
        "rows_per_class": per_class,
    }


class SeedRun:
    """One seed of a plan in ``work`` (data, experiment folders, configs, the seed's ``record.json``)."""

    def __init__(self, plan: MethodPlan, seed: int, work: Path, run: Runner, pretrained: dict[str, Path]):
        from nightcrawler.config import load_config

        self.plan, self.seed, self.work, self.run = plan, seed, Path(work), run
        self.data = self.work / "data"
        self.pretrained = pretrained
        self.cfgs = {m: load_config(str(plan.recipe / f"{m}.yaml")) for m in plan.models}
        self.roles = {m: ROLES[c.MODEL.MODEL_NAME] for m, c in self.cfgs.items()}
        if len(set(self.roles.values())) != len(self.roles):
            raise ValueError(f"models {list(plan.models)}: one model per family (fusion roles {self.roles})")
        first = self.cfgs[plan.models[0]]
        self.frames, self.crop = first.DATA.NUM_FRAMES, first.DATA.TEST_CROP_SIZE
        self.stage_opts = yaml.safe_load((plan.recipe / "pseudo_stage.yaml").read_text()) or {}

    # -------------------------------------------------------------------------------------------- helpers
    def pkl(self, split: str, views: int = 1, crops: int = 1, suffix: str = "") -> str:
        return pkl_name(split, self.frames, self.crop, views, crops, suffix)

    def common(self) -> dict:
        return {
            "DATA.PATH_PREFIX": str(self.data),
            "RNG_SEED": self.seed,
            "MODEL.NUM_CLASSES": self.num_classes,
        }

    def run_net(self, model: str, what: str, units: float, **opts) -> None:
        self.run(
            "tools/run_net.py",
            "--cfg",
            self.plan.recipe / f"{model}.yaml",
            *overrides({**self.common(), **opts}),
            what=f"seed {self.seed}: {what}",
            units=units,
        )

    def adapt_bn(self, model: str, checkpoint: Path, out: Path, what: str, **opts) -> None:
        self.run(
            "tools/adapt_bn.py",
            "--cfg",
            self.plan.recipe / f"{model}.yaml",
            "--checkpoint",
            checkpoint,
            "--output",
            out / "best.pyth",
            *overrides({**self.common(), "OUTPUT_DIR": str(out), **opts}),
            what=f"seed {self.seed}: {what}",
            units=UNITS_ADAPT,
        )

    # -------------------------------------------------------------------------------------------- steps
    def make_data(self) -> None:
        self.run(
            "tools/make_synthetic.py",
            *self.plan.data.make_args(self.data, self.seed),
            what=f"seed {self.seed}: synthetic dark-video set",
            units=units_data(self.plan),
        )
        self.load_data()

    def load_data(self) -> None:
        """Class names and hidden labels of the seed's set (already written by :meth:`make_data`)."""
        meta = json.loads((self.data / "synthetic.json").read_text())
        self.class_names = meta["class_names"]
        self.num_classes = len(self.class_names)
        self.test_labels = read_labelled_list(self.data / "hidden" / "test_labels.csv")
        self.test_names = sorted(self.test_labels)
        self.unlabel_labels = read_labelled_list(self.data / "hidden" / "total_unlabel_labels.csv")

    def supervised(self) -> None:
        """Supervised training with BN adaptation (the exp_adapt_bn recipe), its tests, the source-only and
        (optionally) the raw-clip BN references."""
        both = {"TEST.EXTRA_SETTINGS": "['1x1@gnone']"}
        for m in self.plan.models:
            out = self.work / "exp_adapt_bn" / m
            opts = {
                "OUTPUT_DIR": str(out),
                "TEST.DATA_SELECT": "total_unlabel",
                "TEST.ALSO_SPLITS": "['test']",
                **both,
            }
            if self.plan.epochs is not None:
                opts["SOLVER.MAX_EPOCH"] = self.plan.epochs
            if m in self.pretrained:
                from nightcrawler.method.pretrain import pretrained_overrides

                opts.update(pretrained_overrides(self.cfgs[m].MODEL.MODEL_NAME, self.pretrained[m]))
            self.run_net(
                m, f"adapt-BN training of {m} and its tests", units_train(self.plan, m, self.cfgs[m]), **opts
            )
            src = self.work / "exp_source_only" / m
            # BN statistics of the normal-light training clips as they are (no gamma): the source-only model
            self.adapt_bn(
                m,
                out / "best.pyth",
                src,
                f"{m}: BN statistics of normal-light clips",
                **{"BN.SPLIT": "train_label", "BN.GAMMA": -1.0},
            )
            what = f"{m}: source-only tests (dark test with and without gamma, normal-light val)"
            tests = {
                "TRAIN.ENABLE": False,
                "TEST.DATA_SELECT": "test",
                "TEST.ALSO_SPLITS": "['val_dry']",
                **both,
            }
            self.run_net(m, what, UNITS_SOURCE_TESTS, OUTPUT_DIR=str(src), **tests)
            if self.plan.original_bn_variant:
                raw = self.work / "exp_adapt_bn_raw_clips" / m
                self.adapt_bn(
                    m,
                    out / "best.pyth",
                    raw,
                    f"{m}: BN statistics of raw dark clips (the original's)",
                    **{"BN.GAMMA": -1.0},
                )
                tests = {"TRAIN.ENABLE": False, "TEST.DATA_SELECT": "test"}
                what = f"{m}: dark test with raw-clip BN statistics"
                self.run_net(m, what, UNITS_SOURCE_TESTS / 2, OUTPUT_DIR=str(raw), **tests)

    def write_fusion_configs(self, final_pkls: dict[str, str]) -> tuple[Path, Path, Path]:
        """Stage (thresholded, keep-all) and ensemble YAMLs for the plan's models (equal weights), from the
        recipe's ``pseudo.yaml`` / ``ensemble.yaml``."""
        roles = self.roles
        weight = round(1.0 / len(roles), 6)
        pseudo = yaml.safe_load((self.plan.recipe / "pseudo.yaml").read_text())
        ens = yaml.safe_load((self.plan.recipe / "ensemble.yaml").read_text())
        for c in (pseudo, ens):
            c["num_classes"], c["class_names"] = self.num_classes, list(self.class_names)
        pseudo["inputs"]["pkl_name"] = self.pkl("total_unlabel")
        pseudo["inputs"]["models"] = {roles[m]: f"exp_adapt_bn/{m}" for m in roles}
        pseudo["fusion"]["weights"] = {roles[m]: weight for m in roles}
        ens["models"] = {roles[m]: f"exp_final/{m}" for m in roles}
        ens["pkl_sets"] = {name: {"default": file} for name, file in final_pkls.items()}
        ens["modes"] = [
            {
                "name": name.removeprefix("views_"),
                "pkls": name,
                "fusion": {"weights": {roles[m]: weight for m in roles}},
            }
            for name in final_pkls
        ]
        ens["vote"]["modes"] = [m["name"] for m in ens["modes"]]
        out = self.work / "configs"
        out.mkdir(exist_ok=True)
        # the last stage labels every unlabelled video, as the original's stage 4
        last = dict(pseudo, selection={"method": "all"})
        (out / "pseudo.yaml").write_text(yaml.safe_dump(pseudo, sort_keys=False))
        (out / "pseudo_last.yaml").write_text(yaml.safe_dump(last, sort_keys=False))
        (out / "ensemble.yaml").write_text(yaml.safe_dump(ens, sort_keys=False))
        return out / "pseudo.yaml", out / "pseudo_last.yaml", out / "ensemble.yaml"

    def make_labels(
        self, k: int, config: Path, out_csv: Path, prev: str, what: str, models: list[str] | None = None
    ) -> None:
        """The stage-``k`` script: ``models``' (default all) PKLs in ``prev`` fused by ``config`` -> ``out_csv``."""
        model_dirs = [
            a for m in models or self.plan.models for a in ("--model-dir", f"{self.roles[m]}={prev}/{m}")
        ]
        self.run(
            f"gen_pseudo_tools/generate_pseudo_label_stage{min(k, 4)}.py",
            "--config",
            config,
            "--root",
            self.work,
            *model_dirs,
            "--list",
            self.data / "total_unlabel.csv",
            "--out",
            out_csv,
            what=f"seed {self.seed}: {what}",
            units=UNITS_LABELS,
        )

    def stage_options(
        self, model: str, labels_csv: Path, prev: str, out: Path, tests: dict, extra: dict
    ) -> dict:
        """Overrides of a pseudo-label stage's run of ``model``: pseudo_stage.yaml, the plan's stage length,
        ``extra`` (an ablation's changes), then where it starts, what it trains on, where it writes, ``tests``."""
        opts = dict(self.stage_opts)
        if self.plan.pseudo_epochs is not None:
            opts["SOLVER.MAX_EPOCH"] = self.plan.pseudo_epochs
        opts.update(extra)
        opts.update(
            {
                "OUTPUT_DIR": str(out),
                "TRAIN.CHECKPOINT_FILE_PATH": str(self.work / prev / model / "best.pyth"),
                "DATA.PSEUDO_CSV": str(labels_csv.relative_to(self.data)),
                **tests,
            }
        )
        return opts

    def pseudo_stages(self, record: dict) -> str:
        """Pseudo labels from the ensemble, then semi-supervised re-training, ``plan.stages`` times."""
        v, c = self.plan.last_stage_tta
        final_pkls = {"views_1x1": self.pkl("test")}
        if (v, c) != (1, 1):
            final_pkls[f"views_{v}x{c}"] = self.pkl("test", v, c)
        pseudo_cfg, pseudo_last_cfg, self.ens_cfg = self.write_fusion_configs(final_pkls)
        prev = "exp_adapt_bn"
        for k in range(1, self.plan.stages + 1):
            last = k == self.plan.stages
            labels_csv = self.data / "pseudo" / f"stage{k}.csv"
            config = pseudo_last_cfg if last else pseudo_cfg
            self.make_labels(k, config, labels_csv, prev, f"pseudo labels, stage {k}")
            record["pseudo_labels"][f"stage{k}"] = pseudo_label_quality(
                labels_csv, self.unlabel_labels, self.num_classes
            )
            stage = f"exp_pseudo_stage{k}"
            for m in self.plan.models:
                out = self.work / stage / m
                if last:
                    tests = {
                        "TEST.DATA_SELECT": "test",
                        "TEST.NUM_ENSEMBLE_VIEWS": v,
                        "TEST.NUM_SPATIAL_CROPS": c,
                        "TEST.EXTRA_SETTINGS": "['1x1']" if (v, c) != (1, 1) else "[]",
                    }
                else:
                    tests = {"TEST.DATA_SELECT": "total_unlabel", "TEST.ALSO_SPLITS": "['test']"}
                opts = self.stage_options(m, labels_csv, prev, out, tests, {})
                self.run_net(
                    m,
                    f"stage-{k} pseudo-label training of {m} and its tests",
                    units_stage(self.plan, self.stage_opts, last),
                    **opts,
                )
            file = final_pkls[f"views_{v}x{c}"] if last else self.pkl("test")
            record["steps"][f"pseudo_stage{k}"] = member_predictions(
                {m: self.work / stage / m / file for m in self.plan.models}, self.test_names
            )
            if last:  # every mode of the vote on its own (the last stage's step is its views x crops mode)
                for name, mode_file in final_pkls.items():
                    record.setdefault("extras", {})[f"vote_mode_{name.removeprefix('views_')}"] = (
                        member_predictions(
                            {m: self.work / stage / m / mode_file for m in self.plan.models}, self.test_names
                        )
                    )
            prev = stage
        return prev

    def vote(self, last_stage: str, record: dict) -> None:
        final = self.work / "exp_final"
        final.mkdir(exist_ok=True)
        for m in self.plan.models:
            link = final / m
            if not link.exists():
                link.symlink_to(self.work / last_stage / m, target_is_directory=True)
        sub_dir = self.work / "submission"
        self.run(
            "test_ensemble_vote.py",
            "--config",
            self.ens_cfg,
            "--root",
            self.work,
            "--test-csv",
            self.data / "test.csv",
            "--out-dir",
            sub_dir,
            what=f"seed {self.seed}: final ensemble and vote",
            units=UNITS_LABELS,
        )
        ens = yaml.safe_load(self.ens_cfg.read_text())
        submission = sub_dir / ens["files"]["submission"]
        with open(submission, newline="") as f:
            pred = {row["Video"]: int(row["ClassID"]) for row in csv.DictReader(f)}
        missing = [n for n in self.test_names if n not in pred]
        if missing:
            raise ValueError(f"submission {submission} lacks {len(missing)} test videos, e.g. {missing[:3]}")
        record["steps"]["final_vote"] = {ENSEMBLE: [pred[n] for n in self.test_names]}
        record["submission"] = str(submission)

    # -------------------------------------------------------------------------------------------- all
    def __call__(self) -> dict:
        t0 = time.time()
        self.make_data()
        record: dict = {
            "seed": self.seed,
            "models": list(self.plan.models),
            "class_names": self.class_names,
            "test_names": self.test_names,
            "test_labels": [self.test_labels[n] for n in self.test_names],
            "steps": {},
            "extras": {},
            "pseudo_labels": {},
            "seconds": {},
        }
        mark = time.time()
        self.supervised()
        record["seconds"]["supervised"] = time.time() - mark
        models = self.plan.models
        gnone = self.pkl("test", suffix="_gnone")
        steps = record["steps"]
        steps["source_only"] = member_predictions(
            {m: self.work / "exp_source_only" / m / gnone for m in models}, self.test_names
        )
        steps["gamma_tta"] = member_predictions(
            {m: self.work / "exp_source_only" / m / self.pkl("test") for m in models}, self.test_names
        )
        steps["adapt_bn"] = member_predictions(
            {m: self.work / "exp_adapt_bn" / m / self.pkl("test") for m in models}, self.test_names
        )
        extras = record["extras"]
        extras["adapt_bn_without_gamma"] = member_predictions(
            {m: self.work / "exp_adapt_bn" / m / gnone for m in models}, self.test_names
        )
        if self.plan.original_bn_variant:
            extras["adapt_bn_raw_clip_stats"] = member_predictions(
                {m: self.work / "exp_adapt_bn_raw_clips" / m / self.pkl("test") for m in models},
                self.test_names,
            )
        val = read_labelled_list(self.data / "val_dry.csv")
        val_names = sorted(val)
        record["normal_light_val"] = {
            "names": val_names,
            "labels": [val[n] for n in val_names],
            "preds": member_predictions(
                {m: self.work / "exp_source_only" / m / self.pkl("val_dry", suffix="_gnone") for m in models},
                val_names,
            ),
        }
        mark = time.time()
        last = self.pseudo_stages(record)
        record["seconds"]["pseudo_stages"] = time.time() - mark
        mark = time.time()
        self.vote(last, record)
        record["seconds"]["vote"] = time.time() - mark
        record["seconds"]["total"] = time.time() - t0
        record["step_seconds"] = {
            k: v for k, v in self.run.seconds.items() if k.startswith(f"seed {self.seed}:")
        }
        return record


# ------------------------------------------------------------------------------------------------ planning
# Progress units are nominal seconds on a 2-core CPU at the benchmark's size (measured there); the estimate of
# what is left is rescaled by the seconds measured per unit as the run goes.
def _videos(plan: MethodPlan, *sources: str) -> int:
    return sum(plan.data.per_class.get(s, 0) for s in sources) * plan.data.num_classes


def units_data(plan: MethodPlan) -> float:
    return 0.012 * _videos(plan, "labeled", "dry", "dark", "arid", "test") + 1.0


def units_train(plan: MethodPlan, model: str, cfg) -> float:
    epochs = plan.epochs or cfg.SOLVER.MAX_EPOCH
    per_epoch = 0.02 * _videos(plan, "labeled") + 0.01 * _videos(plan, "arid", "dry")
    return epochs * per_epoch + 0.01 * _videos(plan, "dark", "arid", "test") + 5.0


def stage_epochs(plan: MethodPlan, stage_opts: dict) -> int:
    """Epochs of each pseudo-label stage: the plan's, else pseudo_stage.yaml's."""
    return int(plan.pseudo_epochs or stage_opts.get("SOLVER", {}).get("MAX_EPOCH", 3))


def units_stage(plan: MethodPlan, stage_opts: dict, last: bool) -> float:
    epochs = stage_epochs(plan, stage_opts)
    rows = _videos(plan, "dark", "arid") * (1.0 if last else 0.65)
    per_epoch = 0.04 * max(rows, _videos(plan, "labeled")) + 0.01 * _videos(plan, "arid", "dry")
    return epochs * per_epoch + 0.01 * _videos(plan, "test") * (4 if last else 1) + 5.0


def planned_units(plan: MethodPlan) -> float:
    """Planned work of one seed (progress estimate only)."""
    from nightcrawler.config import load_config

    stage_opts = yaml.safe_load((plan.recipe / "pseudo_stage.yaml").read_text()) or {}
    total = units_data(plan)
    for m in plan.models:
        cfg = load_config(str(plan.recipe / f"{m}.yaml"))
        total += units_train(plan, m, cfg) + UNITS_ADAPT + UNITS_SOURCE_TESTS
        total += (UNITS_ADAPT + UNITS_SOURCE_TESTS / 2) if plan.original_bn_variant else 0.0
    for k in range(1, plan.stages + 1):
        total += UNITS_LABELS + len(plan.models) * units_stage(plan, stage_opts, k == plan.stages)
    return total + UNITS_LABELS


UNITS_ADAPT, UNITS_SOURCE_TESTS, UNITS_LABELS = 4.0, 7.0, 1.0


__all__ = ["REPO", "SeedRun", "member_predictions", "pkl_name", "planned_units", "pseudo_label_quality"]
