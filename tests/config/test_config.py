from __future__ import annotations

import pytest

from nightcrawler.config import ConfigError, assert_and_infer_cfg, get_cfg, load_config, set_flat
from nightcrawler.config.checks import scaled_learning_rates


def test_defaults_hold_the_original_values():
    cfg = get_cfg()
    assert cfg.DATA.MEAN == [0.45, 0.45, 0.45] and cfg.DATA.STD == [0.225, 0.225, 0.225]
    assert cfg.SOLVER.CLIP_GRADIENT == 20.0
    assert cfg.TRAIN.THRESHOLD == 2.0
    assert cfg.TEST.NUM_ENSEMBLE_VIEWS == 10 and cfg.TEST.NUM_SPATIAL_CROPS == 3
    assert cfg.UNIFORMER.HEAD_DIM == 64 and cfg.SF.DEPTH == 101 and cfg.SF.WIDTH == 64
    assert cfg.LOG_PERIOD == 10 and cfg.DATA.ENSEMBLE_METHOD == "sum"
    for section in ("TRAIN", "TEST", "DATA", "DATA_LOADER", "AUG", "MIXUP", "BN", "SOLVER", "MODEL"):
        assert section in cfg
    for section in ("UNIFORMER", "MVIT", "SF", "TENSORBOARD"):
        assert section in cfg


def test_get_cfg_returns_independent_copies():
    a, b = get_cfg(), get_cfg()
    a.SOLVER.BASE_LR = 123.0
    assert b.SOLVER.BASE_LR == 0.1


def test_file_then_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("SOLVER:\n  BASE_LR: 0.5\n  MAX_EPOCH: 7\nMODEL:\n  NUM_CLASSES: 11\n")
    exp = tmp_path / "exp.yaml"
    exp.write_text("_BASE_: base.yaml\nSOLVER:\n  MAX_EPOCH: 9\nMVIT:\n  DEPTH: 16\n  DEPTH: 24\n")
    cfg = load_config(str(exp), ["SOLVER.MAX_EPOCH", "3", "DATA.PATH_LABEL_SEPARATOR", ","])
    assert cfg.SOLVER.BASE_LR == 0.5  # from the base file
    assert cfg.MODEL.NUM_CLASSES == 11
    assert cfg.SOLVER.MAX_EPOCH == 3  # the command line wins over both files
    assert cfg.MVIT.DEPTH == 24  # a repeated YAML key: the last value wins, as in the original
    assert cfg.DATA.PATH_LABEL_SEPARATOR == ","


def test_int_is_accepted_for_float_keys_and_lists_parse():
    cfg = load_config(None, ["SOLVER.WARMUP_EPOCHS", "10", "MVIT.POOL_Q_STRIDE", "[[2, 1, 2, 2]]"])
    assert cfg.SOLVER.WARMUP_EPOCHS == 10.0 and isinstance(cfg.SOLVER.WARMUP_EPOCHS, float)
    assert cfg.MVIT.POOL_Q_STRIDE == [[2, 1, 2, 2]]


def test_unknown_key_names_key_file_and_close_matches(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("SOLVER:\n  BASE_LRR: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(bad))
    msg = str(err.value)
    assert "SOLVER.BASE_LRR" in msg and str(bad) in msg and "SOLVER.BASE_LR" in msg
    with pytest.raises(ConfigError, match="NO.SUCH_KEY"):
        load_config(None, ["NO.SUCH_KEY", "1"])


def test_wrong_type_names_key_and_expected_type(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("TRAIN:\n  BATCH_SIZE: lots\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(bad))
    assert "TRAIN.BATCH_SIZE" in str(err.value) and "int" in str(err.value) and str(bad) in str(err.value)
    with pytest.raises(ConfigError, match="bool"):
        load_config(None, ["TRAIN.ENABLE", "3"])


def test_missing_file_and_odd_override_list():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/no/such/config.yaml")
    with pytest.raises(ConfigError, match="KEY VALUE"):
        load_config(None, ["SOLVER.BASE_LR"])


def test_set_flat_accepts_parity_style_dicts():
    cfg = get_cfg()
    set_flat(
        cfg,
        {"UNIFORMER.PRETRAIN_NAME": None, "MODEL.MODEL_NAME": "Uniformer", "UNIFORMER.DEPTH": [2, 2, 3, 2]},
    )
    assert cfg.UNIFORMER.PRETRAIN_NAME is None and cfg.UNIFORMER.DEPTH == [2, 2, 3, 2]
    assert cfg.MODEL.MODEL_NAME == "Uniformer"


def test_consistency_checks():
    cfg = load_config(None, ["NUM_GPUS", "4", "TRAIN.BATCH_SIZE", "6", "TEST.BATCH_SIZE", "8"])
    with pytest.raises(ConfigError, match="TRAIN.BATCH_SIZE"):
        assert_and_infer_cfg(cfg)
    cfg = load_config(None, ["NUM_GPUS", "0", "TRAIN.BATCH_SIZE", "6", "TEST.BATCH_SIZE", "8"])
    assert_and_infer_cfg(cfg)
    cfg = load_config(None, ["NUM_GPUS", "0", "TEST.DATA_SELECT", "nope"])
    with pytest.raises(ConfigError, match="TEST.DATA_SELECT"):
        assert_and_infer_cfg(cfg)
    # input rules are the model card's (nightcrawler/models/*.py), keyed by MODEL.MODEL_NAME
    cfg = load_config(None, ["NUM_GPUS", "0", "MODEL.MODEL_NAME", "MViT", "DATA.TEST_CROP_SIZE", "256"])
    with pytest.raises(ConfigError, match="TEST_CROP_SIZE"):
        assert_and_infer_cfg(cfg)
    cfg = load_config(None, ["NUM_GPUS", "0", "MODEL.MODEL_NAME", "SF", "DATA.NUM_FRAMES", "6"])
    with pytest.raises(ConfigError, match="NUM_FRAMES"):
        assert_and_infer_cfg(cfg)
    cfg = load_config(None, ["NUM_GPUS", "0", "MODEL.MODEL_NAME", "Nope"])
    with pytest.raises(ConfigError, match="not a registered model"):
        assert_and_infer_cfg(cfg)
    cfg = load_config(None, ["NUM_GPUS", "0", "ENHANCE.TEST", "gamma:valu=2"])
    with pytest.raises(ConfigError, match="ENHANCE.TEST.*accepts value"):
        assert_and_infer_cfg(cfg)
    for control in ("", "shuffle", "one_frame"):
        assert_and_infer_cfg(load_config(None, ["NUM_GPUS", "0", "TEST.FRAME_CONTROL", control]))
    cfg = load_config(None, ["NUM_GPUS", "0", "TEST.FRAME_CONTROL", "reverse"])
    allowed = "'', 'shuffle', 'one_frame'"
    with pytest.raises(ConfigError, match=f"TEST.FRAME_CONTROL = 'reverse' is not one of {allowed}"):
        assert_and_infer_cfg(cfg)


def test_lr_scaling_by_shards():
    cfg = load_config(
        None, ["SOLVER.BASE_LR_SCALE_NUM_SHARDS", "True", "NUM_SHARDS", "2", "SOLVER.BASE_LR", "1e-4"]
    )
    base, start, end = scaled_learning_rates(cfg)
    assert base == pytest.approx(2e-4) and start == pytest.approx(2 * cfg.SOLVER.WARMUP_START_LR)
    assert end == pytest.approx(2 * cfg.SOLVER.COSINE_END_LR)


def test_frozen_config_refuses_every_kind_of_merge(tmp_path):
    from nightcrawler.config.loading import FrozenConfigError

    cfg = get_cfg()
    cfg.freeze()
    with pytest.raises(FrozenConfigError, match="SOLVER.BASE_LR.*frozen") as err:
        cfg.merge_from_list(["SOLVER.BASE_LR", "0.5"])
    assert isinstance(err.value, ConfigError) and isinstance(
        err.value, AttributeError
    )  # yacs raises the latter
    with pytest.raises(FrozenConfigError, match="TRAIN.BATCH_SIZE"):
        set_flat(cfg, {"TRAIN.BATCH_SIZE": 8})
    override = tmp_path / "o.yaml"
    override.write_text("DATA:\n  MEAN: [0.5, 0.5, 0.5]\n")
    with pytest.raises(FrozenConfigError, match="DATA.MEAN"):
        cfg.merge_from_file(str(override))
    assert cfg.SOLVER.BASE_LR == 0.1 and cfg.TRAIN.BATCH_SIZE == 64 and cfg.DATA.MEAN == [0.45, 0.45, 0.45]
    cfg.defrost()
    cfg.merge_from_list(["SOLVER.BASE_LR", "0.5"])
    assert cfg.SOLVER.BASE_LR == 0.5


def test_list_items_must_fit_the_default_item_type(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["DATA.MEAN", "['a',1,2]"])
    msg = str(err.value)
    assert "DATA.MEAN" in msg and "float" in msg and "'a'" in msg and "command line" in msg
    with pytest.raises(ConfigError, match=r"UNIFORMER.DEPTH .*list of int.*2.5"):
        load_config(None, ["UNIFORMER.DEPTH", "[2, 2.5, 3, 2]"])
    with pytest.raises(ConfigError, match="DATA.STD .*True"):
        load_config(None, ["DATA.STD", "[True, 0.2, 0.2]"])  # a bool is not a number here
    with pytest.raises(ConfigError, match="TRAIN.EVAL_SPLITS"):
        load_config(None, ["TRAIN.EVAL_SPLITS", "['arid', 3]"])
    with pytest.raises(ConfigError, match=r"UNIFORMER.PRUNE_RATIO\[1\]"):
        load_config(None, ["UNIFORMER.PRUNE_RATIO", "[[], ['x']]"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("DATA:\n  STD: [0.2, high, 0.2]\n")
    with pytest.raises(ConfigError, match="DATA.STD") as err:
        load_config(str(bad))
    assert str(bad) in str(err.value)


def test_fitting_list_items_are_kept_and_ints_become_floats():
    cfg = load_config(
        None,
        [
            "DATA.MEAN",
            "[0, 1, 0.5]",
            "UNIFORMER.PRUNE_RATIO",
            "[[], [1, 0.5]]",
            "DATA.SPECIAL_LABEL_LIST",
            "[1, 2, 3]",
            "MVIT.DIM_MUL",
            "[[1, 2.0], [3, 2.0]]",  # an empty default accepts any items
        ],
    )
    assert cfg.DATA.MEAN == [0.0, 1.0, 0.5] and all(isinstance(x, float) for x in cfg.DATA.MEAN)
    assert cfg.LEGACY.UNIFORMER.PRUNE_RATIO == [[], [1, 0.5]]
    assert cfg.LEGACY.DATA.SPECIAL_LABEL_LIST == [1, 2, 3] and cfg.MVIT.DIM_MUL == [[1, 2.0], [3, 2.0]]


def test_pseudo_epoch_length_is_one_of_its_choices():
    cfg = get_cfg()
    cfg.TRAIN.PSEUDO_EPOCH_LENGTH = "pseudo"
    assert_and_infer_cfg(cfg)
    cfg = get_cfg()
    cfg.TRAIN.PSEUDO_EPOCH_LENGTH = "longest"
    with pytest.raises(ConfigError, match="TRAIN.PSEUDO_EPOCH_LENGTH"):
        assert_and_infer_cfg(cfg)


def test_inert_keys_of_the_original_go_to_legacy_with_one_warning(tmp_path, caplog):
    from nightcrawler.config import loading
    from nightcrawler.config.defaults import LEGACY_KEYS

    loading._warned_legacy.discard("MODEL.LOSS_FUNC")
    path = tmp_path / "old.yaml"
    path.write_text("MODEL:\n  LOSS_FUNC: soft_cross_entropy\n  NUM_CLASSES: 11\n")
    with caplog.at_level("WARNING"):
        cfg = load_config(str(path), ["MODEL.LOSS_FUNC", "cross_entropy"])
        load_config(str(path))
    assert "LOSS_FUNC" not in cfg.MODEL and cfg.LEGACY.MODEL.LOSS_FUNC == "cross_entropy"
    assert sum("MODEL.LOSS_FUNC has no effect" in r.message for r in caplog.records) == 1
    assert all(k.split(".")[1] not in get_cfg()[k.split(".")[0]] for k in LEGACY_KEYS)
    with pytest.raises(ConfigError, match="LOSS_FUNC"):
        load_config(None, ["MODEL.LOSS_FUNC", "[1]"])  # still type-checked


def test_shipped_configs_load_without_legacy_warnings(caplog):
    """The original's inert keys sit under LEGACY in our own configs: a user's first run warns about nothing."""
    from nightcrawler.config import loading
    from tests.conftest import REPO_ROOT

    files = [
        *sorted((REPO_ROOT / "configs" / "experiments").glob("*.yaml")),
        *sorted((REPO_ROOT / "configs" / "models").glob("*.yaml")),
        *sorted(REPO_ROOT.glob("exp_*/*/config.yaml")),
    ]
    assert len(files) > 20
    saved = set(loading._warned_legacy)
    loading._warned_legacy.clear()
    try:
        with caplog.at_level("WARNING"):
            loaded = [load_config(str(f)) for f in files]
    finally:
        loading._warned_legacy |= saved
    assert not [r.message for r in caplog.records if "has no effect" in r.message]
    common = loaded[0]  # the original's values are still on record
    assert common.LEGACY.MODEL.LOSS_FUNC == "soft_cross_entropy" and common.LEGACY.AUG.COLOR_JITTER == 0.4
