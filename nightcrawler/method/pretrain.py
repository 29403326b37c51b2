"""Source pre-training: the role Kinetics / SSV2 plays for the real method, on a synthetic corpus.

Each tiny model is trained on a broader normal-light corpus (the 11 target motions and the extra motions of
:data:`nightcrawler.data.synthetic.EXTRA_MOTIONS`, motion only, one fixed corpus seed) through
``tools/run_net.py``, and its weights are exported in the format of the model family's public zoo, so that the
target runs load them through the keys real users set:

=========  ==================================  ==============================================
family     zoo format written                  key that loads it
=========  ==================================  ==============================================
UniFormer  ``{"model": state_dict}``           ``UNIFORMER.PRETRAIN_NAME`` (UniFormer video zoo)
SlowFast   ``{"model": {"module.backbone." +   ``SF.PRETRAIN_NAME`` (AlphAction zoo)
           key: tensor}}``
MViT       ``{"model_state": state_dict}``     ``TRAIN.CHECKPOINT_FILE_PATH`` (PySlowFast zoo)
=========  ==================================  ==============================================

The classifier has the corpus's class count; the loaders drop it for the target's 11 classes, as they drop a
Kinetics-600 head. Results are cached under ``cache_dir`` in a folder named by a hash of everything that
determines them (corpus, model config, pre-training overrides, epochs, code version), so repeated runs reuse
them and a changed setting trains anew.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from nightcrawler.method.plan import DataPlan, MethodPlan, PretrainPlan
from nightcrawler.method.runner import Runner, overrides
from nightcrawler.utils.io import atomic_write_text

CACHE_VERSION = 1
CORPUS_UNITS = 8.0  # progress units (nominal seconds) of rendering the corpus
ZOO_FILE = "zoo.pth"

# MODEL.MODEL_NAME -> config key that loads the family's zoo file
PRETRAIN_KEYS = {
    "Uniformer": "UNIFORMER.PRETRAIN_NAME",
    "SF": "SF.PRETRAIN_NAME",
    "MViT": "TRAIN.CHECKPOINT_FILE_PATH",
}


def zoo_state(model_name: str, state_dict: dict[str, torch.Tensor]) -> dict:
    """A trained state dict in the public zoo layout of its family (see the module doc)."""
    if model_name == "Uniformer":
        return {"model": dict(state_dict)}
    if model_name == "SF":
        return {"model": {f"module.backbone.{k}": v for k, v in state_dict.items()}}
    if model_name == "MViT":
        return {"model_state": dict(state_dict)}
    raise ValueError(f"no zoo format for MODEL.MODEL_NAME {model_name!r}; known: {sorted(PRETRAIN_KEYS)}")


def pretrained_overrides(model_name: str, zoo_file: Path) -> dict[str, object]:
    """The config keys that start a target run from ``zoo_file``."""
    key = PRETRAIN_KEYS.get(model_name)
    if key is None:
        raise ValueError(
            f"no zoo loading key for MODEL.MODEL_NAME {model_name!r}; known: {sorted(PRETRAIN_KEYS)}"
        )
    out: dict[str, object] = {key: str(zoo_file)}
    if key == "TRAIN.CHECKPOINT_FILE_PATH":
        out["TRAIN.CHECKPOINT_EPOCH_RESET"] = True
    return out


def corpus_plan(pre: PretrainPlan, target: DataPlan) -> DataPlan:
    """The corpus as a synthetic set: labelled and held-out normal-light videos of every motion, no dark ones."""
    return DataPlan(
        num_classes=len(pre.motions),
        width=target.width,
        height=target.height,
        frames=target.frames,
        class_cue=pre.class_cue,
        per_class={"labeled": pre.per_class, "dry": pre.val_per_class, "dark": 0, "arid": 0, "test": 0},
    )


def _model_name(plan: MethodPlan, model: str) -> str:
    from nightcrawler.config import load_config

    return load_config(str(plan.recipe / f"{model}.yaml")).MODEL.MODEL_NAME


def cache_key(plan: MethodPlan, model: str) -> str:
    """Hash of everything that determines a model's pre-trained weights."""
    from nightcrawler.config import load_config

    cfg = load_config(str(plan.recipe / f"{model}.yaml"))
    pre_yaml = (plan.recipe / "pretrain.yaml").read_text()
    text = json.dumps(
        {
            "version": CACHE_VERSION,
            "corpus": asdict(corpus_plan(plan.pretrain, plan.data)),
            "motions": list(plan.pretrain.motions),
            "corpus_seed": plan.pretrain.seed,
            "model_cfg": cfg.dump(),
            "pretrain_yaml": pre_yaml,
            "epochs": plan.pretrain.epochs,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_pretrained(plan: MethodPlan, cache_dir: Path, run: Runner) -> dict[str, Path]:
    """Zoo files of every model of the plan, trained now where the cache has none. Returns model -> file."""
    import yaml

    cache_dir = Path(cache_dir)
    out: dict[str, Path] = {}
    todo = []
    for m in plan.models:
        folder = cache_dir / f"{m}-{cache_key(plan, m)}"
        if (folder / ZOO_FILE).is_file() and (folder / "pretrain.json").is_file():
            print(f"[method] source pre-training of {m}: cached in {folder}", flush=True)
            out[m] = folder / ZOO_FILE
        else:
            todo.append((m, folder))
    if not todo:
        return out
    corpus = corpus_plan(plan.pretrain, plan.data)
    corpus_dir = (
        cache_dir
        / f"corpus-{hashlib.sha256(json.dumps(asdict(corpus), sort_keys=True).encode()).hexdigest()[:12]}"
    )
    if not (corpus_dir / "synthetic.json").is_file():
        if corpus_dir.exists():
            shutil.rmtree(corpus_dir)  # a half-written corpus of an interrupted run
        args = corpus.make_args(corpus_dir, plan.pretrain.seed)
        args += ["--motions", *plan.pretrain.motions]
        run(
            "tools/make_synthetic.py",
            *args,
            what="source corpus (normal light, all motions)",
            units=CORPUS_UNITS,
        )
    pre = yaml.safe_load((plan.recipe / "pretrain.yaml").read_text()) or {}
    for m, folder in todo:
        train_dir = folder / "run"
        opts = {
            **pre,
            "OUTPUT_DIR": str(train_dir),
            "DATA.PATH_PREFIX": str(corpus_dir),
            "MODEL.NUM_CLASSES": len(plan.pretrain.motions),
            "RNG_SEED": plan.pretrain.seed,
        }
        if plan.pretrain.epochs is not None:
            opts["SOLVER.MAX_EPOCH"] = plan.pretrain.epochs
        run(
            "tools/run_net.py",
            "--cfg",
            plan.recipe / f"{m}.yaml",
            *overrides(opts),
            what=f"source pre-training of {m}",
            units=pretrain_units(plan),
        )
        ckpt = torch.load(train_dir / "best.pyth", map_location="cpu", weights_only=True)
        model_name = _model_name(plan, m)
        tmp = folder / f".{ZOO_FILE}.tmp"
        torch.save(zoo_state(model_name, ckpt["model_state"]), tmp)
        tmp.replace(folder / ZOO_FILE)
        record = {
            "model": m,
            "model_name": model_name,
            "best_metric": ckpt.get("best_metric"),
            "epochs": ckpt.get("epoch"),
            "corpus": str(corpus_dir),
            "motions": list(plan.pretrain.motions),
        }
        atomic_write_text(folder / "pretrain.json", json.dumps(record, indent=1) + "\n")
        shutil.rmtree(train_dir / "checkpoints", ignore_errors=True)  # the zoo file is what is kept
        out[m] = folder / ZOO_FILE
    return out


def pretrain_units(plan: MethodPlan) -> float:
    """Planned work of one model's pre-training, in the progress units of :mod:`nightcrawler.method.pipeline`."""
    import yaml

    pre = yaml.safe_load((plan.recipe / "pretrain.yaml").read_text()) or {}
    epochs = plan.pretrain.epochs or pre.get("SOLVER", {}).get("MAX_EPOCH", 10)
    videos = (plan.pretrain.per_class + plan.pretrain.val_per_class) * len(plan.pretrain.motions)
    return 0.02 * epochs * videos
