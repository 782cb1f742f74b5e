"""Configuration: presets, YAML files, --set overrides, validation messages, hashing."""
import pytest

from prunedyn.run.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    apply_overrides,
    config_hash,
    from_dict,
    load_config,
    preset_names,
    raw_config,
)


def test_preset_names():
    assert "mlp-mnist" in preset_names()


def test_mlp_mnist_preset():
    cfg = load_config("mlp-mnist")
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.name == "mlp-mnist"
    assert cfg.model.name == "mlp"
    assert cfg.model.hidden == [300, 100]
    assert cfg.data.name == "mnist" and cfg.data.source == "auto" and cfg.data.batch_size == 64
    assert cfg.optimizer.name == "sgd"
    assert cfg.optimizer.lr == 0.05 and cfg.optimizer.momentum == 0.9
    assert cfg.regularizer.kind == "l2" and cfg.regularizer.lam == 0.005
    assert cfg.pruner.kind == "stochastic"
    assert cfg.pruner.kernel == "gaussian" and cfg.pruner.sigma == 0.003
    assert cfg.pruner.sigma_mode == "absolute" and cfg.pruner.schedule == "constant"
    assert cfg.epochs == 40 and cfg.seed == 0


def test_defaults_from_empty_dict():
    cfg = from_dict({})
    assert cfg == ExperimentConfig()
    assert from_dict(None) == ExperimentConfig()


def test_overrides_parse_types():
    cfg = load_config(
        "mlp-mnist",
        ["pruner.sigma=1e-3", "model.hidden=[10,5]", "pruner.sticky=true", "epochs=3", "data.train_size=100"],
    )
    assert cfg.pruner.sigma == 1e-3 and isinstance(cfg.pruner.sigma, float)
    assert cfg.model.hidden == [10, 5] and isinstance(cfg.model.hidden, list)
    assert cfg.pruner.sticky is True
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.data.train_size == 100
    # the preset itself is not modified by overrides
    assert load_config("mlp-mnist").pruner.sigma == 0.003


def test_override_more_types():
    cfg = load_config(
        "mlp-mnist",
        ["regularizer.lam=1", "pruner.sticky=false", "epochs=2.0", "data.root=/tmp/x", "data.train_size=", "name=abc"],
    )
    assert cfg.regularizer.lam == 1.0 and isinstance(cfg.regularizer.lam, float)
    assert cfg.pruner.sticky is False
    assert cfg.epochs == 2 and isinstance(cfg.epochs, int)
    assert cfg.data.root == "/tmp/x"
    assert cfg.data.train_size is None
    assert cfg.name == "abc"


def test_later_override_wins():
    cfg = load_config("mlp-mnist", ["epochs=3", "epochs=5"])
    assert cfg.epochs == 5


def test_apply_overrides_returns_copy():
    raw = raw_config("mlp-mnist")
    out = apply_overrides(raw, ["pruner.sigma=0.5"])
    assert raw["pruner"]["sigma"] == 0.003
    assert out["pruner"]["sigma"] == 0.5


BAD = [
    # (overrides, substrings that must be in the message)
    (["pruner.kernel=cauchyish"], ["pruner.kernel", "cauchyish", "gaussian", "laplace", "hard"]),
    (["regularizer.kind=l3"], ["regularizer.kind", "l3", "none", "l1", "l2", "l2_decoupled"]),
    (["pruner.sigma=-0.1"], ["pruner.sigma", "> 0"]),
    (["pruner.sigma=0"], ["pruner.sigma", "> 0"]),
    (["pruner.sigma=.nan"], ["pruner.sigma", "finite"]),
    (["pruner.sigma=nan"], ["pruner.sigma", "finite"]),
    (["pruner.sigma=.inf"], ["pruner.sigma", "finite"]),
    (["regularizer.lam=-1"], ["regularizer.lam", ">= 0"]),
    (["regularizer.lam=.nan"], ["regularizer.lam", "finite"]),
    (["optimizer.lr=-0.05"], ["optimizer.lr", "> 0"]),
    (["optimizer.lr=0"], ["optimizer.lr", "> 0"]),
    (["optimizer.momentum=1.5"], ["optimizer.momentum", "<= 1"]),
    (["epochs=0"], ["epochs", ">= 1"]),
    (["epochs=-3"], ["epochs", ">= 1"]),
    (["data.batch_size=0"], ["data.batch_size", ">= 1"]),
    (["pruner.sparsity=1"], ["pruner.sparsity"]),
    (["pruner.schedule=exp"], ["pruner.schedule", "constant", "linear", "cubic"]),
    (["pruner.sigma_mode=rel"], ["pruner.sigma_mode", "absolute", "relative"]),
    (["pruner.kind=bogus_kind"], ["pruner.kind", "bogus_kind", "none", "stochastic", "magnitude"]),
    (["pruner.scope=net"], ["pruner.scope", "layer", "global"]),
    (["data.source=web"], ["data.source", "auto", "embedded", "torchvision"]),
    (["data.name=cifar"], ["data.name", "mnist", "fashion_mnist"]),
    (["optimizer.name=lbfgs"], ["optimizer.name", "sgd", "adam", "adamw"]),
    (["model.name=resnet"], ["model.name", "mlp"]),
    (["device=tpu"], ["device", "cpu", "cuda"]),
    # unknown keys: top level and inside a section
    (["bogus=1"], ["bogus", "pruner.kernel", "epochs"]),
    (["pruner.sigmaa=1"], ["pruner.sigmaa", "sigma_mode", "kernel"]),
    (["nosuch.key=1"], ["nosuch.key", "pruner.sigma"]),
    (["pruner.sigma.x=1"], ["pruner.sigma.x"]),
    (["pruner=1"], ["pruner", "pruner.sigma"]),
    # no '='
    (["pruner.kind"], ["pruner.kind", "key=value"]),
    # wrong types
    (["epochs=abc"], ["epochs", "abc", "whole number"]),
    (["epochs=2.5"], ["epochs", "whole number"]),
    (["epochs=true"], ["epochs", "whole number"]),
    (["pruner.sigma=abc"], ["pruner.sigma", "abc", "number"]),
    (["pruner.sigma=true"], ["pruner.sigma", "number"]),
    (["pruner.sticky=maybe"], ["pruner.sticky", "maybe", "true", "false"]),
    (["pruner.sticky=1"], ["pruner.sticky", "true", "false"]),
    (["model.hidden=5"], ["model.hidden", "list"]),
    (["model.hidden=[]"], ["model.hidden", "list"]),
    (["model.hidden=[10,a]"], ["model.hidden[1]", "whole number"]),
    (["model.hidden=[10,0]"], ["model.hidden", ">= 1"]),
    (["pruner.kernel=3"], ["pruner.kernel", "string"]),
    (["epochs="], ["epochs", "empty"]),
    (["pruner.sigma=[1"], ["--set pruner.sigma", "YAML"]),
    # the training path (section train)
    (["train.precision=fp16"], ["train.precision", "fp16", "fp32", "bf16"]),
    (["train.sync_every=-1"], ["train.sync_every", ">= 0"]),
    (["train.resident=1"], ["train.resident", "true", "false"]),
    (["train.bogus=1"], ["train.bogus", "resident", "precision", "channels_last", "compile", "sync_every"]),
]


@pytest.mark.parametrize("overrides,needles", BAD, ids=[o[0] for o, _ in BAD])
def test_bad_overrides_raise_config_error(overrides, needles):
    with pytest.raises(ConfigError) as info:
        load_config("mlp-mnist", overrides)
    msg = str(info.value)
    assert "\n" not in msg.strip()  # one line
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


def test_unknown_preset():
    with pytest.raises(ConfigError) as info:
        load_config("nope-preset")
    msg = str(info.value)
    assert "nope-preset" in msg and "mlp-mnist" in msg


def test_missing_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_yaml_that_does_not_parse(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  hidden: [10, 5\npruner: {kind: stochastic\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    msg = str(info.value)
    assert str(path) in msg and "YAML" in msg and "line" in msg


def test_yaml_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(path))


def test_yaml_section_not_a_mapping(tmp_path):
    path = tmp_path / "sec.yaml"
    path.write_text("pruner: 3\n")
    with pytest.raises(ConfigError, match="pruner"):
        load_config(str(path))


def test_yaml_unknown_key_in_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("pruner:\n  sigmaa: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert "sigmaa" in str(info.value) and "sigma_mode" in str(info.value)


def test_yaml_file_loads_with_stem_name(tmp_path):
    path = tmp_path / "my-run.yaml"
    path.write_text(
        "model: {hidden: [20, 10]}\n"
        "pruner: {kind: stochastic, kernel: laplace, sigma: 0.01}\n"
        "regularizer: {kind: l1, lam: 1.0e-4}\n"
        "epochs: 2\n"
    )
    cfg = load_config(str(path))
    assert cfg.name == "my-run"
    assert cfg.model.hidden == [20, 10]
    assert cfg.pruner.kernel == "laplace" and cfg.pruner.sigma == 0.01
    assert cfg.regularizer.kind == "l1" and cfg.regularizer.lam == 1e-4
    assert cfg.epochs == 2
    assert cfg.optimizer == ExperimentConfig().optimizer  # untouched sections take defaults
    # an explicit name wins over the stem; overrides apply to files too
    path2 = tmp_path / "other.yml"
    path2.write_text("name: explicit\nepochs: 4\n")
    cfg2 = load_config(str(path2), ["epochs=7"])
    assert cfg2.name == "explicit" and cfg2.epochs == 7


def test_empty_yaml_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    cfg = load_config(str(path))
    assert cfg.name == "empty"
    assert cfg.epochs == ExperimentConfig().epochs


def test_from_dict_validates():
    with pytest.raises(ConfigError, match="pruner.sigma"):
        from_dict({"pruner": {"sigma": float("nan")}})
    with pytest.raises(ConfigError, match="regularizer.lam"):
        from_dict({"regularizer": {"lam": -0.1}})
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict({"epoch": 3})


def test_config_hash_stable_and_sensitive():
    a = load_config("mlp-mnist")
    b = load_config("mlp-mnist")
    h = config_hash(a)
    assert h == config_hash(a) == config_hash(b)
    assert len(h) == 12 and all(c in "0123456789abcdef" for c in h)
    # equal values reached differently hash the same
    assert config_hash(load_config("mlp-mnist", ["pruner.sigma=0.003"])) == h
    for override in ("pruner.sigma=0.004", "epochs=41", "model.hidden=[300,101]", "seed=1", "pruner.sticky=true"):
        assert config_hash(load_config("mlp-mnist", [override])) != h, override
    # the hash is a function of the values, not of object identity
    a.epochs = 41
    assert config_hash(a) == config_hash(load_config("mlp-mnist", ["epochs=41"]))


def test_data_config_defaults():
    d = DataConfig()
    assert d.name == "mnist" and d.source == "auto" and d.root is None
    assert d.train_size is None and d.test_size is None and d.download is False



def test_later_fields_at_their_default_do_not_change_the_hash(monkeypatch):
    import prunedyn.run.config as c

    cfg = c.load_config("mlp-mnist")
    before = c.config_hash(cfg)
    monkeypatch.setattr(c, "LATER_FIELDS", ("pruner.alpha", "data.augment"))
    # as if alpha and augment had not existed yet: the hash drops them at their defaults
    reduced = cfg.to_dict()
    del reduced["pruner"]["alpha"], reduced["data"]["augment"]
    import hashlib, json

    expected = hashlib.sha256(json.dumps(reduced, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert c.config_hash(cfg) == expected != before
    changed = c.load_config("mlp-mnist", ["pruner.alpha=0.25"])
    assert c.config_hash(changed) != c.config_hash(cfg)


def test_train_section_at_its_defaults_is_left_out_of_the_hash():
    cfg = load_config("vgg16-cifar10")
    assert cfg.train.precision == "fp32" and cfg.train.sync_every == 1 and not cfg.train.resident
    # the hashes before the section existed (cached conv-net runs are keyed by them)
    assert config_hash(cfg) == "29f56fda2905"
    assert config_hash(load_config("unet-dsb2018")) == "8e3303d25e3f"
    assert config_hash(load_config("vgg16-cifar10", ["train.sync_every=1", "train.precision=fp32"])) == "29f56fda2905"
    # any field off its default keys another run
    assert config_hash(load_config("vgg16-cifar10", ["train.precision=bf16"])) != "29f56fda2905"


def test_every_key_has_a_meaning_in_the_help():
    from prunedyn.run.config import MEANING, _all_keys, key_help

    assert set(MEANING) == set(_all_keys())
    lines = key_help()
    assert len(lines) == len(MEANING) and all("default" in line for line in lines)
