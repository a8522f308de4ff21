import pytest

from pipeline.core.config import RunConfig, build_config, parse_shape
from pipeline.core.errors import ConfigError


def test_defaults_prune_half_of_every_group():
    from pipeline.preflight import resolve

    cfg = resolve(build_config())
    assert cfg.ratio == 0.5 and cfg.budget == "ratio" and cfg.targets == ("cpu",) and cfg.scorer == "l1"
    assert cfg.input_shape == (1, 3, 224, 224) and cfg.compensate == "none"


def test_yaml_values_are_overridden_by_flags(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: cifar:resnet20\nratio: 0.3\ntargets: [cpu, openvino]\ninput-shape: 4,3,32,32\n")
    cfg = build_config(recipe, ratio=0.6, scorer=None)
    assert cfg.model == "cifar:resnet20" and cfg.ratio == 0.6
    assert cfg.targets == ("cpu", "openvino") and cfg.input_shape == (4, 3, 32, 32)


def test_unknown_yaml_key_is_an_error(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("ratoi: 0.3\n")
    with pytest.raises(ConfigError, match="unknown config key.*ratoi"):
        build_config(recipe)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"ratio": 0.0}, "ratio must be in"),
        ({"ratio": 1.0}, "ratio must be in"),
        ({"macs_reduction": 1.0}, "must be > 1"),
        ({"ratio": 0.5, "macs_reduction": 2.0}, "give one budget, not --ratio and --macs-reduction"),
        ({"input_shape": (3, 32, 32)}, "N,C,H,W"),
        ({"precision": "fp8"}, "unknown precision"),
        ({"calib_samples": 0}, "calib-samples must be >= 1"),
        ({"iterative": True}, "--iterative fine-tunes between steps"),
        ({"compensate": "median"}, "unknown compensation"),
        ({"regularize": "l0"}, "unknown regulariser"),
    ],
)
def test_bad_values_are_rejected(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**changes)


def test_parse_shape_accepts_commas_and_x():
    assert parse_shape("8,3,224,224") == (8, 3, 224, 224)
    assert parse_shape("1x3x32x32") == (1, 3, 32, 32)
    with pytest.raises(ConfigError):
        parse_shape("a,b")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ratio: half", "config key 'ratio' must be a number or null, got 'half'"),
        ("strict: 3", "config key 'strict' must be true or false, got 3"),
        ("batch_sizes: [1, x]", "config key 'batch_sizes' must be a list of integers, got (1, 'x')"),
        ("scorer: 3", "config key 'scorer' must be a string, got 3"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key_and_the_type(tmp_path, line, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(line + "\n")
    with pytest.raises(ConfigError) as caught:
        build_config(recipe)
    assert str(caught.value) == message


def test_integers_are_numbers(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("macs_reduction: 2\nprofile_seconds: 1\n")
    assert build_config(recipe).macs_reduction == 2
