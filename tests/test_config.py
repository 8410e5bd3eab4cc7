from pathlib import Path

import pytest

from data_gen.config import GenerateConfig
from emopillars_jax.config import dump_config, load_config, parse_override
from emopillars_jax.demo import DemoConfig
from emopillars_jax.errors import ConfigError, EmoPillarsError
from emopillars_jax.train_config import TrainConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def schema_for(path: Path):
    if path.name.startswith("demo"):
        return DemoConfig
    return GenerateConfig if path.name.startswith("generate") else TrainConfig


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.glob("*.yaml")
                                        if p.name.startswith(("generate", "train", "finetune", "demo"))),
                         ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(schema_for(path), path)
    assert load_config(schema_for(path), None, []).__class__ is cfg.__class__


def test_overrides_are_typed_and_nested(tmp_path):
    cfg = load_config(TrainConfig, CONFIGS / "train_demo.yaml",
                      ["optim.lr=3e-5", "batch_size=8", "model.remat=true",
                       "data.bucket_boundaries=[8, 16]", "mesh.shape={data: 2, tensor: 4}"])
    assert cfg.optim.lr == 3e-5 and cfg.batch_size == 8 and cfg.model.remat is True
    assert cfg.data.bucket_boundaries == [8, 16]
    assert cfg.mesh.shape == {"data": 2, "tensor": 4}
    # untouched keys keep the file's values
    assert cfg.epochs == 3
    # a checkpoint step is a number on the command line
    assert load_config(TrainConfig, None, ["eval.checkpoint=2"]).eval.checkpoint == 2


def test_base_inheritance_merges_deeply():
    cfg = load_config(TrainConfig, CONFIGS / "train_contextual_roberta_large.yaml")
    assert cfg.data.mode == "contextual" and cfg.data.max_length == 512
    assert cfg.optim.lr == 2e-5 and cfg.model.dtype == "bfloat16"   # from the base


def test_unknown_key_is_one_line_with_suggestion():
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, CONFIGS / "train_demo.yaml", ["optim.lrr=1e-4"])
    msg = str(err.value)
    assert "\n" not in msg and "optim.lrr: unknown key" in msg and "optim.lr" in msg


def test_wrong_type_names_key_and_type(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, None, ["optim.lr=abc"])
    msg = str(err.value)
    assert "\n" not in msg and "optim.lr" in msg and "float" in msg and "'abc'" in msg


def test_impossible_value_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"batch_size: expected int.*greater than or equal to 1"):
        load_config(TrainConfig, None, ["batch_size=0"])
    with pytest.raises(ConfigError, match=r"splits_contextless.*summing to 1"):
        load_config(GenerateConfig, None, ["splits_contextless=[0.5, 0.1, 0.1]"])
    with pytest.raises(ConfigError, match=r"llm\.engine: expected .*batched.*single"):
        load_config(GenerateConfig, None, ["llm.engine=turbo"])
    # a mesh rule naming no mesh axis, or a mesh axis no rule uses, would shard nothing
    with pytest.raises(ConfigError, match=r"mesh\.rules\.batch: 'nope' is not a mesh axis"):
        load_config(TrainConfig, None, ["mesh.rules={batch: nope}"])
    with pytest.raises(ConfigError, match=r"mesh\.shape: axis 'foo' is used by no entry"):
        load_config(TrainConfig, None, ["mesh.shape={data: -1, foo: 2}"])


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(TrainConfig, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+ invalid YAML"):
        load_config(TrainConfig, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(TrainConfig, listy)
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        parse_override("optim.lr")
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(TrainConfig, loop)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"epochs: 1\n\xff\xfe\x00")
    with pytest.raises(EmoPillarsError, match=r"binary\.yaml: not UTF-8 text"):
        load_config(TrainConfig, binary)


def test_dump_roundtrip(tmp_path):
    cfg = load_config(GenerateConfig, CONFIGS / "generate_demo.yaml", ["llm.n_seq=4"])
    out = tmp_path / "resolved.yaml"
    out.write_text(dump_config(cfg))
    assert load_config(GenerateConfig, out) == cfg
