"""TENT: entropy minimisation moves only the BatchNorm affine parameters and lowers the entropy; the tester and
adapt_checkpoint apply it only when TENT.ENABLE."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nightcrawler.config import ConfigError
from nightcrawler.engine.losses import log_probabilities, prediction_entropy
from nightcrawler.engine.tent import affine_bn_layers, entropy_minimisation
from tests.engine.train_helpers import synthetic_root, tiny_cfg


class _Net(nn.Module):
    """Conv -> BN -> ReLU -> dropout -> pooled linear head; ``softmax_in_eval`` mimics MViT's head."""

    def __init__(self, softmax_in_eval: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 6, 1)
        self.bn = nn.BatchNorm3d(6)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(6, 4)
        self.softmax_in_eval = softmax_in_eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.drop(torch.relu(self.bn(self.conv(x))).mean((2, 3, 4))))
        return z.softmax(-1) if self.softmax_in_eval and not self.training else z


def _dark_batches(n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"inputs": -1.6 + 0.3 * torch.randn(6, 3, 2, 4, 4, generator=g)} for _ in range(n)]


def _net(seed: int = 0, **kw) -> _Net:
    torch.manual_seed(seed)
    net = _Net(**kw)
    with torch.no_grad():  # adapted statistics of the dark clips, as after the BN pass
        feats = torch.cat([net.conv(b["inputs"]).transpose(0, 1).flatten(1) for b in _dark_batches(3, 9)], 1)
        net.bn.running_mean.copy_(feats.mean(1))
        net.bn.running_var.copy_(feats.var(1))
    return net.eval()


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("bn_mode", ["fixed", "batch"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_only_bn_affine_parameters_move_and_the_entropy_falls(bn_mode, optimizer):
    net = _net()
    before = copy.deepcopy(net.state_dict())
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    batches = _dark_batches(4)
    lr = 1.0 if optimizer == "sgd" else 0.1
    report = entropy_minimisation(net, batches, steps=8, lr=lr, optimizer=optimizer, bn_mode=bn_mode)
    # every other tensor bitwise unchanged, BN running statistics included (both modes keep them)
    assert _changed(before, net.state_dict()) == {"bn.weight", "bn.bias"}
    assert report.steps == 8 and report.bn_layers == 1 and report.parameters == 12
    assert len(report.step_entropies) == 8
    assert report.entropy_after < report.entropy_before - 0.1
    # modes, flags, gradients and tracking restored
    assert not net.training and not net.bn.training and net.bn.track_running_stats
    assert {n: p.requires_grad for n, p in net.named_parameters()} == flags
    assert all(p.grad is None for p in net.parameters())


def test_fixed_mode_normalises_with_the_running_statistics_and_batch_mode_with_the_batch():
    """The first step's entropy is the eval-mode entropy (fixed) or the batch-statistics one (batch)."""
    net = _net()
    x = _dark_batches(1)[0]["inputs"]
    with torch.no_grad():
        fixed = prediction_entropy(log_probabilities(net(x))).mean().item()
        net.bn.train()
        net.bn.track_running_stats = False
        batch = prediction_entropy(log_probabilities(net(x))).mean().item()
    assert abs(fixed - batch) > 1e-4
    for mode, expected in (("fixed", fixed), ("batch", batch)):
        report = entropy_minimisation(_net(), [{"inputs": x}], steps=1, lr=0.1, bn_mode=mode)
        assert report.step_entropies[0] == pytest.approx(expected, abs=1e-6)


def test_probability_outputs_adapt_like_their_logits():
    """A model that applies softmax in eval mode (card outputs 'probabilities', MViT) gets the same updates."""
    a, b = _net(seed=3), _net(seed=3, softmax_in_eval=True)
    batches = _dark_batches(3)
    ra = entropy_minimisation(a, batches, steps=4, lr=0.05, outputs="logits")
    rb = entropy_minimisation(b, batches, steps=4, lr=0.05, outputs="probabilities")
    torch.testing.assert_close(a.bn.weight, b.bn.weight, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(a.bn.bias, b.bn.bias, rtol=1e-4, atol=1e-6)
    assert rb.entropy_before == pytest.approx(ra.entropy_before, abs=1e-5)
    # the log of the probabilities is differentiable and renormalised: the same log-softmax
    z = torch.randn(5, 4)
    torch.testing.assert_close(log_probabilities(z.softmax(-1), "probabilities"), F.log_softmax(z, -1))


def test_models_without_trainable_batchnorm_are_left_alone(caplog):
    net = nn.Sequential(nn.Conv3d(3, 2, 1), nn.Flatten(), nn.LazyLinear(3))
    net(torch.zeros(1, 3, 2, 4, 4))
    before = copy.deepcopy(net.state_dict())
    with caplog.at_level("INFO"):
        report = entropy_minimisation(net, _dark_batches(2), steps=3, lr=0.1)
    assert report.steps == 0 and report.entropy_before is None and "no trainable BatchNorm" in caplog.text
    assert _changed(before, net.state_dict()) == set()
    assert affine_bn_layers(nn.BatchNorm3d(4, affine=False)) == []


def test_the_loader_restarts_when_steps_exceed_its_batches():
    net = _net()
    report = entropy_minimisation(net, _dark_batches(2), steps=5, lr=0.05)
    assert report.steps == 5 and len(report.step_entropies) == 5
    with pytest.raises(ValueError, match="no clip"):
        entropy_minimisation(_net(), [], steps=2, lr=0.05)


# ---------------------------------------------------------------------------------------------------- config
def test_config_keys_are_off_by_default_and_checked_when_on(tmp_path_factory, tmp_path):
    root = synthetic_root(tmp_path_factory)
    cfg = tiny_cfg(root, tmp_path, "TENT.STEPS", 0)  # off: not checked
    assert cfg.TENT.ENABLE is False and cfg.TENT.SPLIT == "train_unlabel" and cfg.TENT.BN_MODE == "fixed"
    for opts, key in (
        (("TENT.STEPS", 0), "TENT.STEPS"),
        (("TENT.LR", 0.0), "TENT.LR"),
        (("TENT.OPTIMIZER", "rmsprop"), "TENT.OPTIMIZER"),
        (("TENT.BN_MODE", "online"), "TENT.BN_MODE"),
        (("TENT.SPLIT", "nope"), "TENT.SPLIT"),
        (("TENT.BATCH_SIZE", 3, "NUM_CPU_PROCESSES", 2), "TENT.BATCH_SIZE"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            tiny_cfg(root, tmp_path, "TENT.ENABLE", True, *opts)


# ---------------------------------------------------------------------------------------------------- end to end
def _checkpoint(cfg, path):
    from nightcrawler.models import build_model

    torch.manual_seed(5)
    model = build_model(cfg)
    torch.save({"model_state": model.state_dict(), "epoch": 0}, path)
    return path


def _tent_opts(*extra):
    # fmt: off
    return ("TENT.ENABLE", True, "TENT.STEPS", 6, "TENT.LR", 0.05, "TENT.OPTIMIZER", "adam",
            "TENT.BATCH_SIZE", 3, *extra)
    # fmt: on


def test_tester_with_tent_writes_other_scores_and_without_it_the_plain_ones(
    tmp_path_factory, tmp_path, caplog, monkeypatch
):
    from nightcrawler.data import open_video
    from nightcrawler.data.sampling import uniform_indices
    from nightcrawler.data.transforms import test_views
    from nightcrawler.engine import tent as tent_module
    from nightcrawler.engine import test as tester
    from nightcrawler.models import build_model

    torch.set_num_threads(1)
    root = synthetic_root(tmp_path_factory)
    common = ("TEST.DATA_SELECT", "arid", "TEST.ENABLE", True, "TRAIN.ENABLE", False)
    ckpt = _checkpoint(tiny_cfg(root, tmp_path / "w"), tmp_path / "w.pyth")
    common = (*common, "TEST.CHECKPOINT_FILE_PATH", str(ckpt))
    off_cfg = tiny_cfg(root, tmp_path / "off", *common)
    on_cfg = tiny_cfg(root, tmp_path / "on", *common, *_tent_opts())

    [off] = tester.test(off_cfg)
    reports = []
    real = tent_module.entropy_minimisation
    monkeypatch.setattr(
        tent_module, "entropy_minimisation", lambda *a, **k: reports.append(real(*a, **k)) or reports[-1]
    )
    with caplog.at_level("INFO"):
        [on] = tester.test(on_cfg)
    assert "TENT:" in caplog.text and "mean entropy" in caplog.text
    [report] = reports
    assert report.steps == 6 and report.entropy_after < report.entropy_before
    print(f"tester TENT entropy {report.entropy_before:.4f} -> {report.entropy_after:.4f}")

    with open(off.pkl_path, "rb") as f:
        off_pkl = pickle.load(f)
    with open(on.pkl_path, "rb") as f:
        on_pkl = pickle.load(f)
    assert off.pkl_path.name == on.pkl_path.name  # same file name, other folder
    assert off_pkl["video_names"] == on_pkl["video_names"]
    assert not np.allclose(off_pkl["video_preds"], on_pkl["video_preds"], atol=1e-4)

    # the default (off) PKL is the plain model's outputs: one centre clip per video, gamma 0.25 (ENHANCE.TEST)
    model = build_model(off_cfg)
    model.load_state_dict(torch.load(ckpt, weights_only=True)["model_state"])
    model.eval()
    expected = []
    with torch.inference_mode():
        for name in off_pkl["video_names"]:
            with open_video(root / "ARID_v1.5/clips_v1.5" / name, "pyav") as reader:
                frames = reader.frames_at(uniform_indices(reader.num_frames, 4, view=0, num_views=1))
            expected.append(model(test_views(frames, 32, 1, gamma=0.25))[0].numpy())
    np.testing.assert_allclose(off_pkl["video_preds"], np.stack(expected), rtol=1e-5, atol=1e-5)


def test_adapt_checkpoint_with_tent_writes_the_tuned_affine_parameters(tmp_path_factory, tmp_path):
    from nightcrawler.engine.bn_adapt import adapt_checkpoint

    torch.set_num_threads(1)
    root = synthetic_root(tmp_path_factory)
    bn_cfg = tiny_cfg(root, tmp_path, "TRAIN.BATCH_SIZE", 2)
    src = _checkpoint(bn_cfg, tmp_path / "src.pyth")
    tent_cfg = tiny_cfg(root, tmp_path, "TRAIN.BATCH_SIZE", 2, *_tent_opts())

    plain = adapt_checkpoint(bn_cfg, src, tmp_path / "bn.pyth")
    record = adapt_checkpoint(tent_cfg, src, tmp_path / "bn_tent.pyth")
    assert "tent" not in plain
    tent = record["tent"]
    assert tent["steps"] == 6 and tent["bn_mode"] == "fixed" and tent["optimizer"] == "adam"
    assert tent["entropy_after"] < tent["entropy_before"]
    print(f"adapt_checkpoint TENT entropy {tent['entropy_before']:.4f} -> {tent['entropy_after']:.4f}")

    original = torch.load(src, weights_only=True)["model_state"]
    bn_only = torch.load(tmp_path / "bn.pyth", weights_only=True)
    tuned = torch.load(tmp_path / "bn_tent.pyth", weights_only=True)
    assert tuned["bn_adaptation"]["tent"] == tent
    # the BN statistics pass is the same (same seed); TENT then changed exactly the BN weights and biases
    bn_only, tuned = bn_only["model_state"], tuned["model_state"]
    changed = _changed(bn_only, tuned)
    from nightcrawler.models import build_model

    model = build_model(bn_cfg)
    affine = {
        f"{n}.{p}"
        for n, m in model.named_modules()
        if m in affine_bn_layers(model)
        for p in ("weight", "bias")
    }
    assert changed and changed <= affine and len(changed) > len(affine) // 2
    stats = {k for k in original if k.endswith(("running_mean", "running_var"))}
    assert all(torch.equal(bn_only[k], tuned[k]) for k in stats)
    assert any(not torch.equal(original[k], tuned[k]) for k in stats)


def _tent_rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        net = _net()
        report = entropy_minimisation(net, _dark_batches(3, seed=10 + rank), steps=3, lr=1.0)
        torch.save({"state": net.state_dict(), "report": report.as_dict()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_average_their_gradients(tmp_path):
    """Each process adapts on its own batches; both end with the same parameters, those of one process
    adapting on both processes' batches together (fixed statistics: the mean entropy of the union)."""
    import torch.multiprocessing as mp

    from nightcrawler.utils.distributed import find_free_port

    mp.spawn(_tent_rank, args=(find_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert all(torch.equal(v, r1["state"][k]) for k, v in r0["state"].items())
    assert r0["report"] == r1["report"]
    union = [
        {"inputs": torch.cat([a["inputs"], b["inputs"]])}
        for a, b in zip(_dark_batches(3, seed=10), _dark_batches(3, seed=11))
    ]
    net = _net()
    report = entropy_minimisation(net, union, steps=3, lr=1.0)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-5, atol=1e-6)
    assert r0["report"]["entropy_before"] == pytest.approx(report.entropy_before, abs=1e-6)
    assert r0["report"]["entropy_after"] == pytest.approx(report.entropy_after, abs=1e-5)
    assert r0["report"]["entropy_after"] < r0["report"]["entropy_before"]
