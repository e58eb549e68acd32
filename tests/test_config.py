"""The config system: detectron2 defaults, _BASE_ inheritance, opts, safe YAML, clear errors."""
import pytest

from common.config import CfgNode, ConfigKeyError, configurable, get_cfg


def test_defaults_are_detectron2s():
    cfg = get_cfg()
    assert cfg.VERSION == 2
    assert cfg.MODEL.PIXEL_MEAN == [103.530, 116.280, 123.675]
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is True
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2
    assert cfg.INPUT.MIN_SIZE_TRAIN == (800,)
    assert cfg.SOLVER.WARMUP_FACTOR == pytest.approx(0.001)
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "value"
    assert cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS is True
    # get_cfg returns independent copies
    cfg.SOLVER.BASE_LR = 123.0
    assert get_cfg().SOLVER.BASE_LR == 0.001


def test_base_inheritance_child_wins(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("SOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 10\n  STEPS: (3, 6)\n")
    (tmp_path / "sub" / "child.yaml").write_text("_BASE_: ../base.yaml\nSOLVER:\n  MAX_ITER: 7\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(tmp_path / "sub" / "child.yaml"))
    assert cfg.SOLVER.BASE_LR == 0.5
    assert cfg.SOLVER.MAX_ITER == 7
    assert cfg.SOLVER.STEPS == (3, 6)


def test_merge_from_list_parses_literals():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", "8", "INPUT.MIN_SIZE_TRAIN", "(480, 512)",
                         "DATASETS.TRAIN", "('bccd_train',)", "MODEL.DEVICE", "cpu"])
    assert cfg.SOLVER.IMS_PER_BATCH == 8
    assert cfg.INPUT.MIN_SIZE_TRAIN == (480, 512)
    assert cfg.DATASETS.TRAIN == ("bccd_train",)
    assert cfg.MODEL.DEVICE == "cpu"


def test_unknown_key_in_opts_names_key_and_suggests():
    cfg = get_cfg()
    with pytest.raises(ConfigKeyError) as e:
        cfg.merge_from_list(["SOLVER.BASE_LRR", "0.1"])
    assert "SOLVER.BASE_LRR" in str(e.value)
    assert "SOLVER.BASE_LR" in str(e.value).split("Did you mean:")[1]


def test_odd_opts_is_a_clear_error():
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        get_cfg().merge_from_list(["SOLVER.BASE_LR"])


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("MODEL:\n  RESNET:\n    DEPTH: 18\n")
    with pytest.raises(ConfigKeyError) as e:
        get_cfg().merge_from_file(str(f))
    msg = str(e.value)
    assert "bad.yaml" in msg and "MODEL.RESNET" in msg and "MODEL.RESNETS" in msg


def test_type_mismatch_is_rejected(tmp_path):
    # DATASETS.TRAIN given as a bare string in YAML: yacs refuses str for a tuple key.
    f = tmp_path / "str.yaml"
    f.write_text("DATASETS:\n  TRAIN: bccd_train\n")
    with pytest.raises(ValueError, match="DATASETS.TRAIN"):
        get_cfg().merge_from_file(str(f))


def test_yaml_python_tags_refused_by_default(tmp_path):
    f = tmp_path / "unsafe.yaml"
    f.write_text("SOLVER:\n  STEPS: !!python/object/apply:eval ['(1, 2)']\n")
    with pytest.raises(ValueError, match="allow_unsafe"):
        get_cfg().merge_from_file(str(f))
    cfg = get_cfg()
    cfg.merge_from_file(str(f), allow_unsafe=True)
    assert tuple(cfg.SOLVER.STEPS) == (1, 2)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        get_cfg().merge_from_file("nope.yaml")


class _Thing:
    @configurable
    def __init__(self, a, b=2):
        self.a, self.b = a, b

    @classmethod
    def from_config(cls, cfg, b=5):
        return {"a": cfg.SOLVER.MAX_ITER, "b": b}


def test_configurable_class_with_cfg_and_explicit_args():
    cfg = get_cfg()
    t = _Thing(cfg)
    assert (t.a, t.b) == (40000, 5)
    t = _Thing(cfg, b=9)
    assert (t.a, t.b) == (40000, 9)
    t = _Thing(a=1)
    assert (t.a, t.b) == (1, 2)


def test_configurable_function():
    @configurable(from_config=lambda cfg: {"x": cfg.SOLVER.GAMMA})
    def f(x, y=3):
        return x * y

    assert f(get_cfg()) == pytest.approx(0.3)
    assert f(x=2) == 6


def test_dump_round_trip(tmp_path):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.25
    f = tmp_path / "config.yaml"
    f.write_text(cfg.dump())
    cfg2 = get_cfg()
    cfg2.merge_from_file(str(f))
    assert cfg2.SOLVER.BASE_LR == 0.25
    assert isinstance(cfg2, CfgNode)
