"""The whole method on one synthetic seed, through the project's entry points, scored on the hidden labels.

Steps (each scored on the dark test videos: every model alone and their averaged probabilities):

  source_only    supervised weights (from the source pre-training when the plan has it) with BN statistics of
                 the normal-light training clips, no gamma
  gamma_tta      the same weights, gamma-corrected test frames
  adapt_bn       BN statistics re-estimated on the unlabelled dark videos (every epoch, the recipe's), gamma TTA
  pseudo_stageK  each pseudo-label stage's models (the last one with the plan's views x crops)
  final_vote     the vote script's submission CSV (1x1 and the last stage's TTA as its modes)

plus, beside the steps:

  normal_light_val    the source-only weights on held-out normal-light videos (val_dry), no gamma
  normal_light_final  the last stage's models on the same videos, no gamma
  controls            the source-only weights on val_dry with each test clip's frames as sampled, shuffled in time
                      and frozen to one frame (TEST.FRAME_CONTROL): what motion adds over appearance
  baselines           the one-frame probe (:mod:`nightcrawler.method.probe`): a linear classifier of one
                      frame's colour and edge histograms, on val_dry and on the gamma-corrected dark test videos
  dark_test_stats     brightness of the dark test videos as decoded
  original_recipe     (plan ``original_recipe``) the original's adapt-BN step and pseudo-label chain from the same
                      supervised weights (``configs/benchmark/original_recipe.yaml``), under ``orig_*`` folders

A seed's record keeps, per step and member, the predicted class of every test video, so that intervals and paired
comparisons can be computed from the runs themselves (:mod:`nightcrawler.method.stats`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from nightcrawler.data.sampling import FRAME_CONTROLS
from nightcrawler.data.splits import CLASS_NAMES
from nightcrawler.data.synthetic import LABELED_ONLY_CSV, Layout, measure_brightness
from nightcrawler.method.plan import ORIGINAL_RECIPE, MethodPlan
from nightcrawler.method.probe import VideoSet, probe_one_frame
from nightcrawler.method.runner import REPO, Runner, overrides
from nightcrawler.pseudo.fuse import softmax
from nightcrawler.pseudo.io import align_outputs, load_pkl, read_labelled_list, read_pseudo_csv
from nightcrawler.pseudo.io import pkl_file_name as pkl_name

ROLES = {"Uniformer": "uniformer", "SF": "slowfast", "MViT": "mvit"}
ENSEMBLE = "ensemble"
CONTROLS = {"shuffled_frames": "shuffle", "one_frame": "one_frame"}  # record key -> TEST.FRAME_CONTROL
VAL_GNONE = {
    "TEST.NUM_ENSEMBLE_VIEWS": 1,
    "TEST.NUM_SPATIAL_CROPS": 1,
    "TEST.EXTRA_SETTINGS": "['1x1@gnone']",
}


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


@dataclass(frozen=True)
class Chain:
    """One pseudo-label chain of a seed: the prefix of its folders, the overrides of its runs and its selection
    rules. ``OURS`` is the recipe's; :func:`original_chain` the original's."""

    # prefix of its experiment, config and submission folders and pseudo-label CSVs ("orig_": the original's)
    prefix: str = ""
    label: str = ""  # before its steps' names ("original recipe: ")
    adapt_bn: dict = field(default_factory=dict)  # its own adapt-BN step (ours: the supervised run's)
    train: dict = field(default_factory=dict)  # every stage's training run, on top of pseudo_stage.yaml
    fusion: dict = field(default_factory=dict)  # replaces pseudo.yaml's fusion keys (the weights stay equal)
    # per-class thresholds of stages 1, 2, 3 (empty: pseudo.yaml's selection)
    tables: tuple[tuple[float, ...], ...] = ()

    def folder(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def selection(self, k: int, last: bool) -> dict | None:
        """Stage ``k``'s selection: keep all at the last stage, table k (past the tables: the last one), else
        None (pseudo.yaml's own)."""
        if last:
            return {"method": "all"}
        if not self.tables:
            return None
        return {"method": "thresholds", "thresholds": list(self.tables[min(k, len(self.tables)) - 1])}

    @property
    def shorter_epochs(self) -> bool:
        return self.train.get("TRAIN.PSEUDO_EPOCH_LENGTH") == "shorter"


OURS = Chain()


def original_chain(path: Path, class_names: list[str]) -> Chain:
    """The original recipe's chain from ``original_recipe.yaml``, its threshold tables cut to ``class_names``."""
    raw = yaml.safe_load(path.read_text()) or {}
    columns = list(raw.get("threshold_classes", CLASS_NAMES))
    missing = [c for c in class_names if c not in columns]
    if missing:
        raise ValueError(
            f"{path}: the threshold tables have no column for classes {missing} (threshold_classes)"
        )
    tables = [raw["thresholds"][f"stage{k}"] for k in (1, 2, 3)]
    return Chain(
        prefix="orig_",
        label="original recipe: ",
        adapt_bn=dict(raw.get("adapt_bn", {})),
        train=dict(raw.get("stage", {})),
        fusion=dict(raw.get("fusion", {})),
        tables=tuple(tuple(float(t[columns.index(c)]) for c in class_names) for t in tables),
    )


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
        self.test_gamma = float(first.TEST.GAMMA)
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

    def predictions(self, folder: str, file: str, names: list[str] | None = None) -> dict[str, list[int]]:
        """:func:`member_predictions` of every model's ``folder/<model>/file`` (default: the test videos)."""
        paths = {m: self.work / folder / m / file for m in self.plan.models}
        return member_predictions(paths, self.test_names if names is None else names)

    def test_val_dry(self, model: str, folder: str, what: str, units: float, **opts) -> None:
        """The weights in ``folder/<model>`` on val_dry, 1x1, with and without gamma (``_gnone``)."""
        tests = {"TRAIN.ENABLE": False, "TEST.DATA_SELECT": "val_dry", "TEST.ALSO_SPLITS": "[]", **VAL_GNONE}
        self.run_net(model, what, units, OUTPUT_DIR=str(self.work / folder / model), **tests, **opts)

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
        """Class names, layout and hidden labels of the seed's set (already written by :meth:`make_data`)."""
        meta = json.loads((self.data / "synthetic.json").read_text())
        self.class_names = meta["class_names"]
        self.num_classes = len(self.class_names)
        self.layout = Layout(**meta["layout"])
        self.test_labels = read_labelled_list(self.data / "hidden" / "test_labels.csv")
        self.test_names = sorted(self.test_labels)
        self.unlabel_labels = read_labelled_list(self.data / "hidden" / "total_unlabel_labels.csv")
        self.val_labels = read_labelled_list(self.data / self.layout.csv_val_dry)
        self.val_names = sorted(self.val_labels)

    def supervised(self) -> None:
        """Supervised training with BN adaptation (the exp_adapt_bn recipe), its tests and the source-only
        reference."""
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

    def frame_controls(self) -> dict:
        """The source-only models on val_dry without gamma, each clip's frames as sampled, shuffled, frozen."""
        gnone = self.pkl("val_dry", suffix="_gnone")
        preds = {"as_sampled": self.predictions("exp_source_only", gnone, self.val_names)}
        for key, control in CONTROLS.items():
            for m in self.plan.models:
                what = f"{m}: source-only normal-light val, frame control {control}"
                self.test_val_dry(
                    m, "exp_source_only", what, UNITS_CONTROL, **{"TEST.FRAME_CONTROL": control}
                )
            file = self.pkl("val_dry", suffix="_gnone" + FRAME_CONTROLS[control])
            preds[key] = self.predictions("exp_source_only", file, self.val_names)
        return {
            "names": self.val_names,
            "labels": [self.val_labels[n] for n in self.val_names],
            "preds": preds,
        }

    def one_frame_probe(self) -> dict:
        """The one-frame probe trained on the labelled normal-light videos, on val_dry and the dark test videos
        (gamma-corrected as the test clips are)."""
        data, layout = self.data, self.layout
        sets = {
            "normal_light": VideoSet(data / layout.csv_val_dry, data / layout.root_dry),
            "dark_test": VideoSet(data / layout.csv_test, data / layout.root_test, self.test_gamma),
        }
        train = VideoSet(data / LABELED_ONLY_CSV, data / layout.root_labeled)
        preds = probe_one_frame(train, sets, self.num_classes)
        return {
            "normal_light": {
                "labels": [self.val_labels[n] for n in self.val_names],
                "preds": [preds["normal_light"][n] for n in self.val_names],
            },
            "dark_test": {"preds": [preds["dark_test"][n] for n in self.test_names]},
        }

    def write_fusion_configs(
        self, final_pkls: dict[str, str], chain: Chain = OURS
    ) -> tuple[list[Path], Path]:
        """Each stage's pseudo-label YAML and the ensemble YAML of ``chain`` for the plan's models (equal
        weights), from the recipe's ``pseudo.yaml`` / ``ensemble.yaml``, in ``<prefix>configs/``."""
        roles = self.roles
        weights = {roles[m]: round(1.0 / len(roles), 6) for m in roles}
        pseudo = yaml.safe_load((self.plan.recipe / "pseudo.yaml").read_text())
        ens = yaml.safe_load((self.plan.recipe / "ensemble.yaml").read_text())
        for c in (pseudo, ens):
            c["num_classes"], c["class_names"] = self.num_classes, list(self.class_names)
        pseudo["inputs"]["pkl_name"] = self.pkl("total_unlabel")
        pseudo["inputs"]["models"] = {roles[m]: f"{chain.folder('exp_adapt_bn')}/{m}" for m in roles}
        pseudo["fusion"] = {**pseudo["fusion"], **chain.fusion, "weights": weights}
        ens["models"] = {roles[m]: f"{chain.folder('exp_final')}/{m}" for m in roles}
        ens["pkl_sets"] = {name: {"default": file} for name, file in final_pkls.items()}
        ens["modes"] = [
            {"name": name.removeprefix("views_"), "pkls": name, "fusion": {"weights": weights}}
            for name in final_pkls
        ]
        ens["vote"]["modes"] = [m["name"] for m in ens["modes"]]
        out = self.work / chain.folder("configs")
        out.mkdir(exist_ok=True)
        stages = [self._stage_config(out, pseudo, chain, k) for k in range(1, self.plan.stages + 1)]
        (out / "ensemble.yaml").write_text(yaml.safe_dump(ens, sort_keys=False))
        return stages, out / "ensemble.yaml"

    def _stage_config(self, out: Path, pseudo: dict, chain: Chain, k: int) -> Path:
        """Writes stage ``k``'s pseudo-label YAML: ``pseudo.yaml`` (the recipe's rule), ``pseudo_stage{k}.yaml``
        (a chain's own table) or ``pseudo_last.yaml`` (every unlabelled video, as the original's stage 4)."""
        last = k == self.plan.stages
        selection = chain.selection(k, last)
        name = "pseudo_last.yaml" if last else "pseudo.yaml" if selection is None else f"pseudo_stage{k}.yaml"
        config = pseudo if selection is None else dict(pseudo, selection=selection)
        (out / name).write_text(yaml.safe_dump(config, sort_keys=False))
        return out / name

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
        ``extra`` (an ablation's or a chain's changes), then where it starts, what it trains on, where it writes,
        ``tests``."""
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

    def final_pkls(self) -> dict[str, str]:
        """The vote's PKL sets: ``views_1x1`` and the last stage's ``views_VxC``."""
        v, c = self.plan.last_stage_tta
        pkls = {"views_1x1": self.pkl("test")}
        if (v, c) != (1, 1):
            pkls[f"views_{v}x{c}"] = self.pkl("test", v, c)
        return pkls

    def stage_tests(self, last: bool) -> dict:
        """What a stage's run tests: the unlabelled videos (the next labels) and the dark test; the last stage
        only the dark test, with the plan's views x crops (and 1x1)."""
        if not last:
            return {"TEST.DATA_SELECT": "total_unlabel", "TEST.ALSO_SPLITS": "['test']"}
        v, c = self.plan.last_stage_tta
        return {
            "TEST.DATA_SELECT": "test",
            "TEST.NUM_ENSEMBLE_VIEWS": v,
            "TEST.NUM_SPATIAL_CROPS": c,
            "TEST.EXTRA_SETTINGS": "['1x1']" if (v, c) != (1, 1) else "[]",
        }

    def pseudo_stages(self, out: dict, chain: Chain = OURS, extras: dict | None = None) -> tuple[str, Path]:
        """Pseudo labels from the ensemble, then semi-supervised re-training, ``plan.stages`` times, along
        ``chain``: each stage's predictions go to ``out["steps"]``, its labels' quality to
        ``out["pseudo_labels"]``, and (with ``extras``) every vote mode of the last stage alone to ``extras``.
        Returns the last stage's folder and the chain's ensemble YAML."""
        final_pkls = self.final_pkls()
        configs, ens_cfg = self.write_fusion_configs(final_pkls, chain)
        prev = chain.folder("exp_adapt_bn")
        for k, config in enumerate(configs, 1):
            last = k == self.plan.stages
            labels_csv = self.data / "pseudo" / f"{chain.prefix}stage{k}.csv"
            self.make_labels(k, config, labels_csv, prev, f"{chain.label}pseudo labels, stage {k}")
            out["pseudo_labels"][f"stage{k}"] = pseudo_label_quality(
                labels_csv, self.unlabel_labels, self.num_classes
            )
            stage = chain.folder(f"exp_pseudo_stage{k}")
            self.train_stage(k, stage, labels_csv, prev, chain)
            v, c = self.plan.last_stage_tta
            out["steps"][f"pseudo_stage{k}"] = self.predictions(
                stage, self.pkl("test", *((v, c) if last else (1, 1)))
            )
            if last and extras is not None:  # every mode of the vote on its own
                for name, file in final_pkls.items():
                    extras[f"vote_mode_{name.removeprefix('views_')}"] = self.predictions(stage, file)
            prev = stage
        return prev, ens_cfg

    def train_stage(self, k: int, stage: str, labels_csv: Path, prev: str, chain: Chain) -> None:
        """Stage ``k``'s training run of every model from ``prev`` on ``labels_csv`` into ``stage``."""
        last = k == self.plan.stages
        units = units_stage(self.plan, self.stage_opts, last, chain.shorter_epochs)
        for m in self.plan.models:
            out = self.work / stage / m
            opts = self.stage_options(m, labels_csv, prev, out, self.stage_tests(last), chain.train)
            self.run_net(
                m, f"{chain.label}stage-{k} pseudo-label training of {m} and its tests", units, **opts
            )

    def vote(self, last_stage: str, out: dict, ens_cfg: Path, chain: Chain = OURS) -> Path:
        """The vote script on ``last_stage``'s models (linked as ``<prefix>exp_final``); its submission's classes
        go to ``out["steps"]["final_vote"]``. Returns the submission CSV."""
        final = self.work / chain.folder("exp_final")
        final.mkdir(exist_ok=True)
        for m in self.plan.models:
            link = final / m
            if not link.exists():
                link.symlink_to(self.work / last_stage / m, target_is_directory=True)
        sub_dir = self.work / chain.folder("submission")
        self.run(
            "test_ensemble_vote.py",
            "--config",
            ens_cfg,
            "--root",
            self.work,
            "--test-csv",
            self.data / "test.csv",
            "--out-dir",
            sub_dir,
            what=f"seed {self.seed}: {chain.label}final ensemble and vote",
            units=UNITS_LABELS,
        )
        submission = sub_dir / yaml.safe_load(ens_cfg.read_text())["files"]["submission"]
        with open(submission, newline="") as f:
            pred = {row["Video"]: int(row["ClassID"]) for row in csv.DictReader(f)}
        missing = [n for n in self.test_names if n not in pred]
        if missing:
            raise ValueError(f"submission {submission} lacks {len(missing)} test videos, e.g. {missing[:3]}")
        out["steps"]["final_vote"] = {ENSEMBLE: [pred[n] for n in self.test_names]}
        return submission

    def normal_light_final(self, last_stage: str) -> dict:
        """The last stage's models on val_dry, no gamma."""
        for m in self.plan.models:
            self.test_val_dry(m, last_stage, f"{m}: last stage on the normal-light val", UNITS_CONTROL)
        preds = self.predictions(last_stage, self.pkl("val_dry", suffix="_gnone"), self.val_names)
        return {
            "names": self.val_names,
            "labels": [self.val_labels[n] for n in self.val_names],
            "preds": preds,
        }

    def original_recipe(self) -> dict:
        """The original's adapt-BN step (BN statistics of raw dark clips on our supervised weights, gamma test),
        its pseudo-label chain and its vote (``original_recipe.yaml``), under ``orig_*`` folders."""
        chain = original_chain(self.plan.recipe / ORIGINAL_RECIPE, self.class_names)
        adapted = chain.folder("exp_adapt_bn")
        for m in self.plan.models:
            out = self.work / adapted / m
            what = f"{chain.label}{m}: BN statistics of raw dark clips"
            self.adapt_bn(m, self.work / "exp_adapt_bn" / m / "best.pyth", out, what, **chain.adapt_bn)
            tests = {
                "TRAIN.ENABLE": False,
                "TEST.DATA_SELECT": "test",
                "TEST.ALSO_SPLITS": "['total_unlabel']",
                "TEST.EXTRA_SETTINGS": "[]",
            }
            what = f"{chain.label}{m}: adapt-BN tests (dark test, unlabelled videos)"
            self.run_net(m, what, UNITS_SOURCE_TESTS, OUTPUT_DIR=str(out), **tests)
        result: dict = {
            "steps": {"adapt_bn": self.predictions(adapted, self.pkl("test"))},
            "pseudo_labels": {},
        }
        last, ens_cfg = self.pseudo_stages(result, chain)
        self.vote(last, result, ens_cfg, chain)
        return result

    # -------------------------------------------------------------------------------------------- all
    def source_steps(self, record: dict) -> None:
        """The steps and extras read from the supervised runs' PKLs."""
        gnone = self.pkl("test", suffix="_gnone")
        steps = record["steps"]
        steps["source_only"] = self.predictions("exp_source_only", gnone)
        steps["gamma_tta"] = self.predictions("exp_source_only", self.pkl("test"))
        steps["adapt_bn"] = self.predictions("exp_adapt_bn", self.pkl("test"))
        record["extras"]["adapt_bn_without_gamma"] = self.predictions("exp_adapt_bn", gnone)
        record["normal_light_val"] = {
            "names": self.val_names,
            "labels": [self.val_labels[n] for n in self.val_names],
            "preds": self.predictions(
                "exp_source_only", self.pkl("val_dry", suffix="_gnone"), self.val_names
            ),
        }

    def references(self, record: dict) -> None:
        """Frame-order controls, the one-frame probe and the dark test videos' brightness."""
        record["controls"] = self.frame_controls()
        record["baselines"] = {"one_frame_probe": self.one_frame_probe()}
        test_root = self.data / self.layout.root_test
        record["dark_test_stats"] = measure_brightness([test_root / n for n in self.test_names])

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
        with _timed(record, "supervised"):
            self.supervised()
            self.source_steps(record)
        with _timed(record, "controls"):
            self.references(record)
        with _timed(record, "pseudo_stages"):
            last, ens_cfg = self.pseudo_stages(record, OURS, record["extras"])
        with _timed(record, "vote"):
            record["submission"] = str(self.vote(last, record, ens_cfg))
        with _timed(record, "normal_light_final"):
            record["normal_light_final"] = self.normal_light_final(last)
        if self.plan.original_recipe:
            with _timed(record, "original_recipe"):
                record["original_recipe"] = self.original_recipe()
        record["seconds"]["total"] = time.time() - t0
        record["step_seconds"] = {
            k: v for k, v in self.run.seconds.items() if k.startswith(f"seed {self.seed}:")
        }
        return record


@contextlib.contextmanager
def _timed(record: dict, name: str):
    """Records the block's wall time as ``record["seconds"][name]``."""
    mark = time.time()
    yield
    record["seconds"][name] = time.time() - mark


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


def units_stage(plan: MethodPlan, stage_opts: dict, last: bool, shorter: bool = False) -> float:
    """One stage's training run of one model; ``shorter``: epochs of the shorter loader (the original's)."""
    epochs = stage_epochs(plan, stage_opts)
    rows = _videos(plan, "dark", "arid") * (1.0 if last else 0.65)
    labelled = _videos(plan, "labeled")
    per_epoch = 0.04 * (min if shorter else max)(rows, labelled) + 0.01 * _videos(plan, "arid", "dry")
    return epochs * per_epoch + 0.01 * _videos(plan, "test") * (4 if last else 1) + 5.0


def units_chain(plan: MethodPlan, stage_opts: dict, shorter: bool = False) -> float:
    """A pseudo-label chain: each stage's labels and training runs, then the vote."""
    stages = range(1, plan.stages + 1)
    runs = sum(len(plan.models) * units_stage(plan, stage_opts, k == plan.stages, shorter) for k in stages)
    return runs + UNITS_LABELS * (plan.stages + 1)


def planned_units(plan: MethodPlan) -> float:
    """Planned work of one seed (progress estimate only)."""
    from nightcrawler.config import load_config

    stage_opts = yaml.safe_load((plan.recipe / "pseudo_stage.yaml").read_text()) or {}
    total = units_data(plan) + units_chain(plan, stage_opts)
    for m in plan.models:
        cfg = load_config(str(plan.recipe / f"{m}.yaml"))
        total += units_train(plan, m, cfg) + UNITS_ADAPT + UNITS_SOURCE_TESTS
        total += UNITS_CONTROL * (len(CONTROLS) + 1)  # the controls and the last stage on val_dry
    if plan.original_recipe:
        total += len(plan.models) * (UNITS_ADAPT + UNITS_SOURCE_TESTS) + units_chain(plan, stage_opts, True)
    return total


UNITS_ADAPT, UNITS_SOURCE_TESTS, UNITS_LABELS, UNITS_CONTROL = 4.0, 7.0, 1.0, 2.0


__all__ = [
    "OURS",
    "REPO",
    "Chain",
    "SeedRun",
    "member_predictions",
    "original_chain",
    "pkl_name",
    "planned_units",
    "pseudo_label_quality",
]
