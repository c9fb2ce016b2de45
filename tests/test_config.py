"""Experiment configs: typed, unknown keys rejected with the valid ones named, overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from kdmem.config import ExperimentConfig, from_dict, load_config, to_toml
from kdmem.errors import ConfigError

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))

MINIMAL = """
[run]
name = "t"
[data]
corpus = ["c.jsonl"]
tokenizer = "tok"
[models]
teacher = "T"
student = "S"
"""


def test_paper_defaults(tmp_path: Path) -> None:
    (tmp_path / "e.toml").write_text(MINIMAL)
    cfg = load_config(tmp_path / "e.toml")
    assert (cfg.data.prefix, cfg.data.suffix, cfg.data.seq_len) == (50, 50, 256)
    assert (cfg.soft.loss, cfg.soft.temperature, cfg.soft.alpha) == ("fkl", 2.0, 0.0)
    assert cfg.teacher.lr == 5e-5 and cfg.teacher.schedule == "cosine"
    assert cfg.hard.gen_len == 256 and cfg.run.seeds == [0, 1, 2]
    assert cfg.predict.negatives_per_positive == 3 and cfg.predict.resamples == 100


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load_and_start_with_their_command(path: Path) -> None:
    assert path.read_text().splitlines()[0] == f"# kdmem run configs/{path.name}"
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)


def test_there_is_a_config_per_family_and_dataset() -> None:
    stems = {p.stem for p in CONFIGS}
    for fam in ("pythia", "olmo2", "qwen3"):
        for data in ("fineweb", "wikitext103", "nemotron"):
            assert f"{fam}_{data}" in stems


def test_unknown_keys_name_the_valid_ones(tmp_path: Path) -> None:
    (tmp_path / "e.toml").write_text(MINIMAL + "[soft]\ntemprature = 4\n")
    with pytest.raises(ConfigError, match=r"soft\.temprature.*valid keys:.*temperature"):
        load_config(tmp_path / "e.toml")
    (tmp_path / "e.toml").write_text(MINIMAL + "[sotf]\n")
    with pytest.raises(ConfigError, match=r"sotf.*valid keys:.*soft"):
        load_config(tmp_path / "e.toml")


def test_types_are_checked(tmp_path: Path) -> None:
    (tmp_path / "e.toml").write_text(MINIMAL + '[soft]\ntemperature = "hot"\n')
    with pytest.raises(ConfigError, match=r"soft\.temperature = 'hot'"):
        load_config(tmp_path / "e.toml")
    (tmp_path / "e.toml").write_text(MINIMAL + '[soft]\nloss = "kl"\n')
    with pytest.raises(ConfigError, match="choose one of"):
        load_config(tmp_path / "e.toml")


def test_overrides_are_typed(tmp_path: Path) -> None:
    (tmp_path / "e.toml").write_text(MINIMAL)
    cfg = load_config(tmp_path / "e.toml", ["soft.temperature=4", "run.seeds=[0]"])
    assert cfg.soft.temperature == 4.0 and cfg.run.seeds == [0]
    with pytest.raises(ConfigError, match="expected int"):
        load_config(tmp_path / "e.toml", ["data.prefix=fifty"])
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(tmp_path / "e.toml", ["oops"])


def test_invalid_values(tmp_path: Path) -> None:
    (tmp_path / "e.toml").write_text(MINIMAL)
    with pytest.raises(ConfigError, match="prefix"):
        load_config(tmp_path / "e.toml", ["data.prefix=200", "data.suffix=100"])
    with pytest.raises(ConfigError, match="missing required key"):
        from_dict(ExperimentConfig, {"run": {"name": "x"}})


def test_resolved_toml_round_trips(tmp_path: Path) -> None:
    (tmp_path / "e.toml").write_text(MINIMAL)
    cfg = load_config(tmp_path / "e.toml", ["soft.temperatures=[1.0, 4.0]"])
    again = from_dict(ExperimentConfig, tomllib.loads(to_toml(cfg)))
    assert again == cfg
