"""Dual-light distillation: the teacher sees the student's clips enhanced (same frames, same augmentation), stays
frozen, and its soft targets join the student's loss; ALPHA 0 is the plain trainer, bit for bit."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from nightcrawler.config import ConfigError, check_input_paths
from nightcrawler.data import build_dataset, build_loader, collate_train
from nightcrawler.data.enhance import Gamma
from nightcrawler.data.transforms import normalize_lut
from nightcrawler.engine import distill as distill_module
from nightcrawler.engine import train as train_module
from nightcrawler.engine.distill import SoftTargets, Teacher, build_teacher
from nightcrawler.engine.losses import distillation_loss, log_probabilities, soft_target_cross_entropy
from nightcrawler.engine.train import model_fingerprint
from nightcrawler.models import build_model
from nightcrawler.models.checkpoint import load_pretrained
from nightcrawler.utils.seeding import seed_everything
from tests.engine.train_helpers import (
    NUM_CLASSES,
    TINY_UNIFORMER_YAML,
    read_stats,
    run_training,
    synthetic_root,
    tiny_cfg,
    write_pseudo_csv,
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = synthetic_root(tmp_path_factory)
    write_pseudo_csv(root)
    return root


@pytest.fixture(scope="module")
def teacher_ckpt(data_root, tmp_path_factory):
    """Weights of a tiny UniFormer (the student's architecture), seeded differently from the students."""
    out = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(7)
    model = build_model(tiny_cfg(data_root, out))
    path = out / "teacher.pyth"
    torch.save({"model_state": model.state_dict(), "epoch": 9}, path)
    return path


def _cfg(root, out, *opts):
    # fmt: off
    return tiny_cfg(
        root, out,
        "DATA.PSEUDO_CSV", "pseudo.csv", "TRAIN.BATCH_SIZE", 2, "SOLVER.MAX_EPOCH", 1, "SOLVER.WARMUP_EPOCHS", 0.0,
        "TRAIN.EVAL_SPLITS", [], "TRAIN.SAVE_LATEST", False, "TRAIN.MAX_ITERS_PER_EPOCH", 2,
        *opts,
    )
    # fmt: on


def _distill(ckpt, *opts):
    return ("DISTILL.ENABLE", True, "DISTILL.TEACHER_CHECKPOINT", str(ckpt), *opts)


# ---------------------------------------------------------------------------------------------------- data
@pytest.mark.parametrize("split", ["train_pseudo_label", "train_label"])
def test_teacher_twins_replay_the_student_clips_augmentation_on_enhanced_frames(data_root, tmp_path, split):
    """RandAugment + erasing + crop + flip, 2 clips per video: the student's clips equal a plain dataset's, the
    teacher's equal those of a dataset that enhances its frames, and the random streams end in the same place."""
    cfg = _cfg(data_root, tmp_path, "AUG.ENABLE", True, "AUG.NUM_SAMPLE", 2, "AUG.RE_PROB", 1.0)
    gamma = "gamma:value=0.25"
    paired = build_dataset(cfg, split, teacher_enhancement=gamma)
    plain = build_dataset(cfg, split)
    enhanced = build_dataset(cfg, split, enhancement=gamma)

    def item(dataset, index):
        seed_everything(123)
        out = dataset[index]
        return out, (torch.rand(3), random.random())  # where the streams stand afterwards

    for index in (0, 3):
        (got, after), (ref, ref_after), (lit, _) = (
            item(paired, index),
            item(plain, index),
            item(enhanced, index),
        )
        assert got["teacher_inputs"].shape == got["inputs"].shape == (2, 3, 4, 32, 32)
        assert torch.equal(got["inputs"], ref["inputs"]) and torch.equal(after[0], ref_after[0])
        assert after[1] == ref_after[1]
        assert torch.equal(got["teacher_inputs"], lit["inputs"])
        assert not torch.equal(got["inputs"], got["teacher_inputs"])
        assert got["inputs"][0].mean() < got["teacher_inputs"][0].mean()  # brighter
        assert "teacher_inputs" not in ref
    batch = collate_train([got, ref | {"teacher_inputs": ref["inputs"]}])
    assert torch.equal(batch["teacher_inputs"][:2], got["teacher_inputs"])
    assert "teacher_inputs" not in collate_train([ref])
    with pytest.raises(ValueError, match="training splits"):
        build_dataset(cfg, "arid", teacher_enhancement=gamma)
    loader = build_loader(cfg, split, teacher_enhancement=gamma)
    first = next(iter(loader))
    assert first["teacher_inputs"].shape == first["inputs"].shape


# ---------------------------------------------------------------------------------------------------- loss
def test_soft_targets_combine_the_label_loss_with_the_temperature_kl():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    label_loss = soft_target_cross_entropy(student, torch.tensor([0, 1, 2, 0]))
    t = 4.0
    kl = (F.softmax(teacher / t, -1) * (F.log_softmax(teacher / t, -1) - F.log_softmax(student / t, -1))).sum(
        -1
    )
    soft = SoftTargets(F.log_softmax(teacher, -1), t, 0.3)
    torch.testing.assert_close(soft.soft_loss(student), kl.mean() * t * t)
    torch.testing.assert_close(soft.combine(student, label_loss), 0.7 * label_loss + 0.3 * kl.mean() * t * t)
    assert torch.equal(SoftTargets(teacher, t, 0.0).combine(student, label_loss), label_loss)
    # a teacher's log-probabilities give the same soft loss as its logits (temperature softmax is shift-free)
    torch.testing.assert_close(
        distillation_loss(student, teacher, t), distillation_loss(student, F.log_softmax(teacher, -1), t)
    )


def test_a_teacher_with_probability_outputs_is_read_through_their_log():
    class ProbNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(5, 3)

        def forward(self, x):
            z = self.fc(x)
            return z if self.training else z.softmax(-1)

    net = ProbNet()
    x = torch.randn(6, 5)
    teacher = Teacher(net, "probabilities")
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    torch.testing.assert_close(teacher.log_probs(x), F.log_softmax(net.fc(x), -1))
    torch.testing.assert_close(log_probabilities(net.fc(x)), F.log_softmax(net.fc(x), -1))


# ---------------------------------------------------------------------------------------------------- trainer
def _record(monkeypatch) -> tuple[list[dict], list[torch.Tensor], list[Teacher]]:
    """Records every optimiser step (inputs, targets, soft targets, loss, the model's logits before the step), the
    teacher's input clips and the teacher object."""
    steps, teacher_clips, teachers = [], [], []
    real_step, real_build, real_log_probs = (
        train_module.optimisation_step,
        distill_module.build_teacher,
        Teacher.log_probs,
    )

    def step(model, optimizer, precision, inputs, targets, clip_norm, **kw):
        with torch.no_grad():
            logits = model(inputs)
        record = {"inputs": inputs.clone(), "targets": targets.clone(), "distill": kw.get("distill")}
        record["logits"] = logits
        result = real_step(model, optimizer, precision, inputs, targets, clip_norm, **kw)
        record["loss"] = result.loss
        steps.append(record)
        return result

    def build(cfg, device):
        teachers.append(real_build(cfg, device))
        return teachers[-1]

    def log_probs(self, clips):
        teacher_clips.append(clips.clone())
        return real_log_probs(self, clips)

    monkeypatch.setattr(train_module, "optimisation_step", step)
    monkeypatch.setattr(distill_module, "build_teacher", build)
    monkeypatch.setattr(Teacher, "log_probs", log_probs)
    return steps, teacher_clips, teachers


def test_the_student_gets_raw_clips_and_the_frozen_teacher_their_enhanced_twins(
    data_root, teacher_ckpt, tmp_path, monkeypatch
):
    """Jitter scale = the videos' short side and no RandAugment: the transform is a crop and a flip, so each
    teacher clip must be exactly the gamma look-up of the student clip's pixel values."""
    steps, teacher_clips, teachers = _record(monkeypatch)
    cfg = _cfg(data_root, tmp_path, "DATA.TRAIN_JITTER_SCALES", [40, 40], *_distill(teacher_ckpt))
    run_training(cfg)
    pseudo_steps = [s for s in steps if s["distill"] is not None]
    assert (
        len(steps) == 4 and len(pseudo_steps) == 2 and len(teacher_clips) == 2
    )  # labelled steps not distilled
    assert steps[0]["distill"] is None and steps[1]["distill"] is not None
    raw = normalize_lut(None)[:, 0]
    lit = normalize_lut(Gamma(0.25).lut())[:, 0]
    for s, clips in zip(pseudo_steps, teacher_clips):
        values = torch.round((s["inputs"] * 0.225 + 0.45) * 255).long()
        assert torch.allclose(raw[values], s["inputs"], atol=1e-6)  # the student's clip is raw pixel values
        torch.testing.assert_close(clips, lit[values], rtol=0, atol=1e-6)
        assert clips.mean() > s["inputs"].mean() + 0.5
    # the teacher: frozen, in eval mode, its weights exactly the checkpoint's after training
    [teacher] = teachers
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
    saved = torch.load(teacher_ckpt, weights_only=True)["model_state"]
    assert all(torch.equal(v, saved[k]) for k, v in teacher.model.state_dict().items())


def test_alpha_zero_is_the_plain_trainer_bit_for_bit_even_with_mixup_and_randaugment(
    data_root, teacher_ckpt, tmp_path
):
    # fmt: off
    opts = ("AUG.ENABLE", True, "MIXUP.ENABLE", True, "MIXUP.SWITCH_PROB", 0.5)
    # fmt: on
    plain = run_training(_cfg(data_root, tmp_path / "plain", *opts))
    distilled = run_training(
        _cfg(
            data_root,
            tmp_path / "alpha0",
            *opts,
            *_distill(
                teacher_ckpt, "DISTILL.ALPHA", 0.0, "DISTILL.SPLITS", ["train_label", "train_pseudo_label"]
            ),
        )
    )
    assert model_fingerprint(plain) == model_fingerprint(distilled)
    a, b = read_stats(tmp_path / "plain", "train_iter"), read_stats(tmp_path / "alpha0", "train_iter")
    assert len(a) == len(b) == 2
    assert [(r["loss"], r["pseudo_loss"]) for r in a] == [(r["loss"], r["pseudo_loss"]) for r in b]


def test_the_soft_term_is_in_the_loss_and_a_distilled_run_checkpoints(
    data_root, tmp_path, monkeypatch, tmp_path_factory
):
    """A teacher of another width (DISTILL.TEACHER_CFG), ALPHA 0.5, both kinds of batches distilled, with Mixup:
    each step's loss is 0.5 * label loss + 0.5 * T^2 KL, and the run's checkpoint loads strictly."""
    teacher_yaml = tmp_path / "teacher.yaml"
    teacher_yaml.write_text(
        f"_BASE_: {TINY_UNIFORMER_YAML}\n"
        "DATA: {NUM_FRAMES: 4, TRAIN_CROP_SIZE: 32, TEST_CROP_SIZE: 32}\n"
        f"MODEL: {{NUM_CLASSES: {NUM_CLASSES}}}\n"
        "UNIFORMER: {EMBED_DIM: [16, 16, 32, 32], DEPTH: [1, 1, 1, 1], HEAD_DIM: 8, DROP_DEPTH_RATE: 0.0}\n"
    )
    from nightcrawler.config import load_config

    torch.manual_seed(3)
    teacher_model = build_model(load_config(str(teacher_yaml)))
    ckpt = tmp_path / "wide_teacher.pyth"
    torch.save({"model_state": teacher_model.state_dict()}, ckpt)

    steps, teacher_clips, _ = _record(monkeypatch)
    splits = ["train_label", "train_pseudo_label"]
    opts = _distill(ckpt, "DISTILL.TEACHER_CFG", str(teacher_yaml), "DISTILL.SPLITS", splits)
    cfg = _cfg(data_root, tmp_path / "run", "MIXUP.ENABLE", True, *opts)
    model = run_training(cfg)
    assert len(steps) == 4 and all(s["distill"] is not None for s in steps) and len(teacher_clips) == 4
    for s in steps:
        label = soft_target_cross_entropy(s["logits"], s["targets"])
        soft = distillation_loss(s["logits"], s["distill"].teacher_log_probs, 4.0)
        assert s["loss"] == pytest.approx(float(0.5 * label + 0.5 * soft), rel=1e-5)
        # KL is positive unless the two distributions are identical (near-uniform logits of two fresh tiny models
        # make it small, so the exact sum above is what shows the term is there)
        assert float(soft) > 0.0 and s["loss"] != pytest.approx(float(label), rel=1e-3)
    assert len(read_stats(tmp_path / "run", "train_epoch")) == 1
    saved = sorted((tmp_path / "run" / "checkpoints").glob("*.pyth"))
    assert saved
    fresh = build_model(cfg)
    report = load_pretrained(fresh, saved[-1], num_classes=NUM_CLASSES, strict=True)
    assert report.clean
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict().items())


# ---------------------------------------------------------------------------------------------------- config
def test_config_errors_name_their_key(data_root, teacher_ckpt, tmp_path):
    cfg = _cfg(data_root, tmp_path)
    assert cfg.DISTILL.ENABLE is False and cfg.DISTILL.TEACHER_ENHANCEMENT == "gamma:value=0.25"
    assert cfg.DISTILL.SPLITS == ["train_pseudo_label"] and cfg.DISTILL.ALPHA == 0.5
    on = ("DISTILL.ENABLE", True)
    for opts, key in (
        (on, "DISTILL.TEACHER_CHECKPOINT"),
        (_distill(teacher_ckpt, "DISTILL.ALPHA", 1.5), "DISTILL.ALPHA"),
        (_distill(teacher_ckpt, "DISTILL.TEMPERATURE", 0.0), "DISTILL.TEMPERATURE"),
        (_distill(teacher_ckpt, "DISTILL.SPLITS", ["train_unlabel"]), "DISTILL.SPLITS"),
        (_distill(teacher_ckpt, "DISTILL.SPLITS", []), "DISTILL.SPLITS"),
        (_distill(teacher_ckpt, "DISTILL.TEACHER_ENHANCEMENT", "sunshine"), "DISTILL.TEACHER_ENHANCEMENT"),
        (_distill(teacher_ckpt, "ENHANCE.TRAIN_DARK", "gamma:value=0.5"), "ENHANCE.TRAIN_DARK"),
        (_distill(teacher_ckpt, "DATA.PSEUDO_CSV", ""), "DATA.PSEUDO_CSV"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            _cfg(data_root, tmp_path, *opts)
    # files are checked by the launcher's pre-flight
    missing = _cfg(data_root, tmp_path, *_distill(tmp_path / "nope.pyth"))
    with pytest.raises(ConfigError, match=r"DISTILL\.TEACHER_CHECKPOINT"):
        check_input_paths(missing)
    # a teacher of another class count is refused when it is built
    other = tmp_path / "other.yaml"
    other.write_text(f"_BASE_: {TINY_UNIFORMER_YAML}\nMODEL: {{NUM_CLASSES: 5}}\n")
    with pytest.raises(ConfigError, match=r"DISTILL\.TEACHER_CFG"):
        build_teacher(
            _cfg(data_root, tmp_path, *_distill(teacher_ckpt, "DISTILL.TEACHER_CFG", str(other))), "cpu"
        )
