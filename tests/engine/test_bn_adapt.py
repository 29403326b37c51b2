"""BN adaptation: only BatchNorm running statistics change, and they become the dark data's statistics."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nightcrawler.engine.bn_adapt import adapt_bn_statistics, bn_layers


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 1)
        self.bn = nn.BatchNorm3d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 2)
        self.register_buffer("other", torch.arange(3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.bn(self.conv(x))).mean((2, 3, 4))))


def _dark_batches(n: int, seed: int = 0) -> list[dict]:
    """Normalised "dark" clips: far below the normal-light mean, with a small spread."""
    g = torch.Generator().manual_seed(seed)
    return [
        {"inputs": -1.6 + 0.2 * torch.randn(4, 3, 2, 3, 3, generator=g), "labels": torch.zeros(4)}
        for _ in range(n)
    ]


def _population_stats(net: _Net, batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        feats = torch.cat([net.conv(b["inputs"]).transpose(0, 1).reshape(4, -1) for b in batches], dim=1)
    return feats.mean(1), feats.var(1, unbiased=False)


def test_only_bn_statistics_change_and_match_the_dark_population():
    torch.manual_seed(0)
    net = _Net().eval()
    before = copy.deepcopy(net.state_dict())
    batches = _dark_batches(5)
    used = adapt_bn_statistics(net, batches, num_batches=3, device="cpu")
    assert used == 3
    assert not net.training  # mode restored
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    mean, var = _population_stats(net, batches[:3])
    torch.testing.assert_close(net.bn.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net.bn.running_var, var, rtol=1e-3, atol=1e-5)
    assert net.bn.momentum == 0.1  # restored after fvcore's override


def test_uses_at_most_the_loader_length_and_keeps_buffer_identity():
    net = _Net()
    mean_buffer = net.bn.running_mean
    assert adapt_bn_statistics(net, _dark_batches(2), num_batches=200) == 2
    assert net.bn.running_mean is mean_buffer  # same tensor object (DDP keeps references to buffers)
    assert net.training


def test_models_without_batchnorm_are_left_alone(caplog):
    net = nn.Sequential(nn.Conv3d(3, 2, 1), nn.LayerNorm(3))
    before = copy.deepcopy(net.state_dict())
    with caplog.at_level("INFO"):
        assert adapt_bn_statistics(net, _dark_batches(2), num_batches=2) == 0
    assert "no BatchNorm" in caplog.text
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert bn_layers(net) == []


def test_an_empty_loader_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one full batch"):
        adapt_bn_statistics(_Net(), [], num_batches=5)


def test_tiny_uniformer_adapts_to_generated_dark_videos(tmp_path_factory, tmp_path):
    """Real builders: statistics first estimated on normal-light clips move to exactly the statistics of the
    dark clips (``train_unlabel``), and nothing but BatchNorm running statistics changes."""
    from nightcrawler.data import build_loader
    from nightcrawler.models import build_model
    from nightcrawler.utils.seeding import seed_everything
    from tests.engine.train_helpers import synthetic_root, tiny_cfg

    cfg = tiny_cfg(synthetic_root(tmp_path_factory), tmp_path, "AUG.NUM_SAMPLE", 2)
    seed_everything(0)
    model = build_model(cfg)
    layers = bn_layers(model)
    assert len(layers) >= 4
    first = layers[0]
    bright, dark = build_loader(cfg, "train_label"), build_loader(cfg, "train_unlabel")
    assert adapt_bn_statistics(model, bright, num_batches=2) == 2
    bright_mean, bright_var = first.running_mean.clone(), first.running_var.clone()
    state = copy.deepcopy(model.state_dict())

    # the population statistics of the first BN layer's input over the next two dark batches
    feats = []
    hook = first.register_forward_pre_hook(
        lambda m, inp: feats.append(inp[0].detach().transpose(0, 1).flatten(1))
    )
    seed_everything(1)
    model.train()
    with torch.no_grad():
        for _, batch in zip(range(2), dark):
            model(batch["inputs"])
    hook.remove()
    f = torch.cat(feats, dim=1)
    dark_mean, dark_var = f.mean(1), f.var(1, unbiased=False)
    model.load_state_dict(state)

    seed_everything(1)  # the same two batches
    assert adapt_bn_statistics(model, dark, num_batches=2) == 2
    torch.testing.assert_close(first.running_mean, dark_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first.running_var, dark_var, rtol=1e-3, atol=1e-5)
    gap = (bright_mean - dark_mean).abs().mean()
    assert gap > 0.1 * dark_var.sqrt().mean()  # the dark clips really differ from the bright ones
    assert (first.running_mean - dark_mean).abs().mean() < 0.01 * gap
    assert not torch.allclose(first.running_var, bright_var)

    after = model.state_dict()
    changed = {k for k in state if not torch.equal(state[k], after[k])}
    bn_names = {n for n, m in model.named_modules() if m in layers}
    allowed = {f"{n}.{b}" for n in bn_names for b in ("running_mean", "running_var", "num_batches_tracked")}
    assert changed and changed <= allowed
    assert all(not k.endswith((".weight", ".bias")) for k in changed)


def _adapt_bn_tool():
    import importlib.util

    from tests.conftest import REPO_ROOT

    spec = importlib.util.spec_from_file_location("adapt_bn_tool", REPO_ROOT / "tools" / "adapt_bn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adapt_bn_tool_on_a_folder_and_on_a_list(tmp_path_factory, tmp_path):
    from nightcrawler.engine.checkpointer import save_checkpoint
    from nightcrawler.models import build_model
    from tests.engine.train_helpers import TINY_UNIFORMER_YAML, synthetic_root, tiny_cfg, tiny_opts

    root = synthetic_root(tmp_path_factory)
    cfg = tiny_cfg(root, tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters())
    src = tmp_path / "trained.pyth"
    save_checkpoint(src, model, opt, None, 3, cfg, best_metric={"split": "arid", "top1_err": 50.0})
    tool = _adapt_bn_tool()
    opts = [str(v) for v in tiny_opts(root, tmp_path, "AUG.NUM_SAMPLE", 2, "TRAIN.BATCH_SIZE", 2)]
    common = ["--cfg", str(TINY_UNIFORMER_YAML), "--checkpoint", str(src)]

    folder_out = tmp_path / "adapted_folder.pyth"
    assert (
        tool.main(
            [*common, "--output", str(folder_out), "--videos", str(root / "dark_train" / "Train"), *opts]
        )
        == 0
    )
    list_out = tmp_path / "adapted_list.pyth"
    arid = ["--videos", str(root / "arid.csv"), "--video-root", str(root / "ARID_v1.5" / "clips_v1.5")]
    assert tool.main([*common, "--output", str(list_out), *arid, *opts]) == 0

    original = torch.load(src, weights_only=True)
    for out in (folder_out, list_out):
        adapted = torch.load(out, weights_only=True)
        assert adapted["epoch"] == 3 and adapted["best_metric"] == original["best_metric"]
        assert adapted["optimizer_state"]["param_groups"] == original["optimizer_state"]["param_groups"]
        record = adapted["bn_adaptation"]
        assert record["num_videos"] == 6 and record["batches"] == 2 and record["enhancement"] == "none"
        changed = {
            k for k, v in adapted["model_state"].items() if not torch.equal(v, original["model_state"][k])
        }
        assert changed and all(
            k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked") for k in changed
        )
    a = torch.load(folder_out, weights_only=True)["model_state"]
    b = torch.load(list_out, weights_only=True)["model_state"]
    assert any(not torch.equal(a[k], b[k]) for k in a if k.endswith("running_mean"))  # different dark videos

    assert (
        tool.main([*common, "--output", str(tmp_path / "x.pyth"), "--videos", str(tmp_path / "nope"), *opts])
        == 3
    )
    # another class count would save a fresh classifier in the "adapted" checkpoint: refused, nothing written
    other = tmp_path / "other_count.pyth"
    folder = ["--videos", str(root / "dark_train" / "Train")]
    assert tool.main([*common, "--output", str(other), *folder, *opts, "MODEL.NUM_CLASSES", "7"]) == 4
    assert not other.exists()


@pytest.mark.parametrize("pool", [False, True])
def test_statistics_shared_across_processes(monkeypatch, pool):
    """Two simulated processes: without pooling every rank takes rank 0's statistics (what the original
    saves); with BN.SYNC_STATS the statistics of both ranks' batches together."""
    import nightcrawler.engine.bn_adapt as bn_adapt

    batches = {
        0: _dark_batches(2, seed=0),
        1: [{"inputs": b["inputs"] + 1.0} for b in _dark_batches(2, seed=1)],
    }
    nets = {}
    for rank in (0, 1):
        torch.manual_seed(0)
        nets[rank] = _Net()
        adapt_bn_statistics(nets[rank], batches[rank], num_batches=2)
    rank0 = (nets[0].bn.running_mean.clone(), nets[0].bn.running_var.clone())

    def all_reduce(t):  # this process is rank 1 in the pooled case: add rank 0's contribution
        mean0, var0 = rank0
        t += torch.cat([mean0, var0 + mean0.square()]).double()

    def broadcast(t, src):
        t.copy_(torch.cat(rank0))

    monkeypatch.setattr(bn_adapt, "is_dist", lambda: True)
    monkeypatch.setattr(bn_adapt, "get_world_size", lambda: 2)
    monkeypatch.setattr(bn_adapt.dist, "all_reduce", all_reduce)
    monkeypatch.setattr(bn_adapt.dist, "broadcast", broadcast)
    bn_adapt._share_statistics([nets[1].bn], pool)
    if not pool:
        torch.testing.assert_close(nets[1].bn.running_mean, rank0[0])
        torch.testing.assert_close(nets[1].bn.running_var, rank0[1])
        return
    mean, var = _population_stats(nets[1], batches[0] + batches[1])
    torch.testing.assert_close(nets[1].bn.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(nets[1].bn.running_var, var, rtol=1e-3, atol=1e-5)
