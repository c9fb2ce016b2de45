"""Experiment configs: typed, unknown keys rejected with the valid ones named, overrides."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

import click
import pytest

from kdmem.config import (
    DistillConfig,
    ExperimentConfig,
    FinetuneConfig,
    from_dict,
    help_of,
    load_config,
    load_recipe,
    to_toml,
)
from kdmem.errors import ConfigError

SECTION_NAMES = {f.name for f in dataclasses.fields(ExperimentConfig)}

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


# ---- one definition per field: help text and defaults shared with the CLI --------------------


def _options(command: str) -> dict[str, Any]:
    from kdmem.cli import main

    cmd = main.commands[command]
    return {p.name: p for p in cmd.params if isinstance(p, click.Option)}


@pytest.mark.parametrize("cls", [FinetuneConfig, DistillConfig, ExperimentConfig])
def test_every_config_field_carries_help_text(cls: type) -> None:
    def walk(c: type) -> list[tuple[str, str]]:
        out = []
        for f in dataclasses.fields(c):
            if dataclasses.is_dataclass(f.type) or f.name in SECTION_NAMES:
                continue
            out.append((f"{c.__name__}.{f.name}", help_of(c, f.name)))
        return out

    classes = [cls]
    if cls is ExperimentConfig:
        hints = typing.get_type_hints(ExperimentConfig)
        classes = [hints[f.name] for f in dataclasses.fields(ExperimentConfig)]
    missing = [name for c in classes for name, text in walk(c) if not text.strip()]
    assert not missing, f"fields without help text: {missing}"


@pytest.mark.parametrize(
    ("command", "cls"), [("train", FinetuneConfig), ("distill", DistillConfig)]
)
def test_recipe_options_are_generated_from_the_config_fields(command: str, cls: type) -> None:
    opts = _options(command)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(opts) == set(fields) | {"config_file"}
    for name, f in fields.items():
        opt = opts[name]
        assert opt.help is not None and opt.help.startswith(help_of(cls, name)), name
        assert opt.opts[0] == "--" + name.replace("_", "-")
        if f.default is not dataclasses.MISSING and f.default is not None:
            assert f"[default: {f.default}]" in opt.help, name


def _literal_choices(cls: type, name: str) -> list[str]:
    return [str(a) for a in typing.get_args(typing.get_type_hints(cls)[name])]


def test_shared_options_of_other_commands_match_the_config_defaults() -> None:
    from kdmem.analysis.predictor import DEFAULT_FEATURES
    from kdmem.config import (
        DataSection,
        FeaturizeSection,
        FilterSection,
        HardSection,
        MeasureSection,
        PredictSection,
        ScanSection,
    )

    data, hard = DataSection(corpus=["c"], tokenizer="t"), HardSection()
    checks = {
        ("measure", "prefix"): data.prefix,
        ("measure", "suffix"): data.suffix,
        ("measure", "verify_generate"): MeasureSection().verify_generate,
        ("generate", "prefix"): data.prefix,
        ("generate", "new_tokens"): hard.gen_len - data.prefix,
        ("featurize", "prefix"): data.prefix,
        ("featurize", "suffix"): data.suffix,
        ("featurize", "ngram"): tuple(FeaturizeSection().ngram),
        ("scan", "min_len"): ScanSection().min_len or data.suffix,  # 0 means data.suffix
        ("scan", "max_locations"): ScanSection().max_locations,
        ("shard", "dtype"): data.dtype,
        ("shard", "text_field"): data.text_field,
        ("shard", "split"): data.split,
        ("predict", "resamples"): PredictSection().resamples,
        ("predict", "neg_ratio"): PredictSection().negatives_per_positive,
        ("predict", "test_size"): PredictSection().test_fraction,
        ("predict", "seed"): PredictSection().seed,
        ("filter", "threshold"): FilterSection().threshold,
        ("filter", "model"): FilterSection().model,
        ("predict", "target_recall"): PredictSection().target_recall,
    }
    wrong = {}
    for (command, name), want in checks.items():
        got = _options(command)[name].default
        if got != want:
            wrong[f"kdmem {command} --{name.replace('_', '-')}"] = (got, want)
    assert not wrong, f"CLI default != config default: {wrong}"
    assert list(_options("shard")["dtype"].type.choices) == _literal_choices(DataSection, "dtype")
    assert tuple(PredictSection().features) == DEFAULT_FEATURES


def test_recipes_load_from_a_toml_file_with_options_winning(tmp_path: Path) -> None:
    f = tmp_path / "ft.toml"
    f.write_text('role = "baseline"\nmodel = "m"\ndata = "d"\nout = "o"\nlr = 1e-3\nepochs = 2\n')
    cfg = load_recipe(FinetuneConfig, f, {"epochs": 5, "lr": None})
    assert (cfg.lr, cfg.epochs, cfg.role) == (1e-3, 5, "baseline")
    f.write_text("lr = [\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_recipe(FinetuneConfig, f, {})


def test_resolved_toml_is_written_with_tomli_w(tmp_path: Path) -> None:
    (tmp_path / "e.toml").write_text(MINIMAL)
    cfg = load_config(tmp_path / "e.toml", ['data.text_field="quote\\"d"'])
    text = to_toml(cfg)
    assert tomllib.loads(text)["data"]["text_field"] == 'quote"d'
    assert "threads" not in tomllib.loads(text)["run"]  # None means the default: omitted


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "a\\\\b", ""])
def test_run_names_are_not_paths(tmp_path: Path, name: str) -> None:
    (tmp_path / "e.toml").write_text(MINIMAL)
    with pytest.raises(ConfigError, match=r"run\.name"):
        load_config(tmp_path / "e.toml", [f'run.name="{name}"'])


def test_a_run_dir_outside_the_working_directory_is_printed(tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from kdmem.cli import main

    (tmp_path / "e.toml").write_text(MINIMAL)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = CliRunner().invoke(
        main,
        [
            "run",
            str(tmp_path / "e.toml"),
            "--run-dir",
            str(tmp_path / "elsewhere"),
            "--plan",
        ],
    )
    assert "outside the working directory" in r.output
