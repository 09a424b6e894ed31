"""Per-task defaults: official SHIP settings on VTAB-1k, the mini table, user overrides."""
import csv

import pytest

from shiplib.engine import RunConfig, resolve_config
from shiplib.engine.config import ConfigError, eval_epochs, parse_overrides, parse_value
from shiplib.engine.defaults import (BENCHMARK_DEFAULTS, mini_defaults_table, official_settings, published_results,
                                     resolve_defaults, vtab1k_method_defaults)
from shiplib.methods import list_methods

SHIP_OPTIONS = ["drop_path_rate", "prompt_length", "threshold", "affinity", "prototypes", "levels"]


def test_official_settings_are_package_data_with_source():
    s = official_settings()
    assert len(s) == 19
    assert s["svhn"]["lr"] == 0.25 and s["svhn"]["weight_decay"] == 0.01
    assert s["svhn"]["threshold"] == 0.97 and s["svhn"]["prompt_length"] == 50
    assert s["cifar100"]["prompt_indices"] == [0, 2, 4, 6, 8, 11]
    assert all(v["source"] == "haoweiz23/SHIP results_summary.txt @ d65400f" for v in s.values())


@pytest.mark.reference
def test_official_settings_match_reference(reference_dir):
    ours = official_settings()
    with open(reference_dir / "official_results.csv") as f:
        for row in csv.DictReader(f):
            o = ours[row["task"]]
            assert (o["lr"], o["weight_decay"], o["threshold"], o["prompt_length"]) == (
                float(row["lr"]), float(row["weight_decay"]), float(row["share_threshold"]), int(row["K"]))
            assert o["official_accuracy"] == float(row["accuracy"])
            assert o["prompt_indices"] == [int(i) for i in row["prompt_indices"].split()]


def test_published_results_load():
    df = published_results()
    assert {"method", "source", "task", "accuracy", "note"} <= set(df.columns)
    assert len(df[df.method.str.startswith("SHIP")]) == 19


def test_ship_on_vtab1k_takes_official_values():
    values, sources = resolve_defaults("vtab1k", "diabetic_retinopathy", "ship", SHIP_OPTIONS)
    assert (values["lr"], values["weight_decay"], values["threshold"], values["prompt_length"]) == (1.0, 0.01, 0.96, 50)
    assert values["backbone"] == BENCHMARK_DEFAULTS["vtab1k"]["backbone"] and values["img_size"] == 224
    assert values["epochs"] == 100 and values["warmup_epochs"] == 10
    assert "vtab1k_official_settings.csv" in sources["lr"]


def test_other_methods_on_vtab1k_take_documented_default():
    values, sources = resolve_defaults("vtab1k", "svhn", "vpt_deep", ["num_prompts"])
    assert (values["lr"], values["weight_decay"]) == (1e-3, 1e-3) and "threshold" not in values
    assert sources["lr"] == "vtab1k_method_defaults.csv [*]"
    values, sources = resolve_defaults("vtab1k", "svhn", "full", [])
    assert values["lr"] == vtab1k_method_defaults()["full"]["lr"] == 1e-4
    assert sources["lr"] == "vtab1k_method_defaults.csv [full]"


def test_every_method_with_per_task_settings_names_a_known_table():
    table = vtab1k_method_defaults()
    assert "*" in table and set(table) - {"*"} <= set(list_methods())
    per_task = [m for m, row in table.items() if "per_task_settings" in row]
    assert per_task == ["ship"] and table["ship"]["per_task_settings"] == "vtab1k_official_settings.csv"


def test_mini_table_rows_are_tuned_and_fall_back():
    rows = mini_defaults_table()
    assert {r["status"] for r in rows} <= {"tuned", "untuned"}
    tuned = {r["method"] for r in rows if r["status"] == "tuned" and r["task"] == "*"}
    assert tuned == set(list_methods()), "every method has its own row with an lr tuned on val200"
    assert all("val200" in r["note"] for r in rows if r["status"] == "tuned")
    values, sources = resolve_defaults("mini", "mini_anything", "ship", SHIP_OPTIONS)
    assert values["backbone"] == "mini" and values["img_size"] == 32
    assert values["threshold"] == 0.9 and values["prompt_length"] == 10 and values["epochs"] == 10
    assert "(tuned)" in sources["lr"] and "[ship,*]" in sources["threshold"]
    values, _ = resolve_defaults("mini", "mini_anything", "vpt_deep", ["num_prompts"])
    assert values["num_prompts"] == 10 and "prompt_length" not in values  # (*, *) row, only its own options
    values, _ = resolve_defaults("mini", "mini_anything", "linear", ["drop_path_rate"])
    assert "num_prompts" not in values


def test_user_overrides_win_and_are_recorded():
    cfg = RunConfig(task="svhn", method="vpt_deep").with_overrides({"lr": 5e-4, "K": 7, "epochs": 3})
    r = resolve_config(cfg)
    assert r.identity()["lr"] == r.training.lr == 5e-4 and r.identity()["options"]["num_prompts"] == 7
    assert r.overrides == {"lr": 5e-4, "epochs": 3, "num_prompts": 7}
    assert r.sources["lr"] == "user" and r.sources["weight_decay"] == "vtab1k_method_defaults.csv [*]"
    assert r.identity()["eval_epochs"] == [0, 2] and r.training.eval_epochs == (0, 2)


def test_bad_settings_fail_clearly():
    with pytest.raises(ConfigError, match=r"unknown setting 'lrr'.*Valid run settings: .*lr.*Valid vpt_deep options"):
        RunConfig(task="svhn", method="vpt_deep").with_overrides({"lrr": 1})
    with pytest.raises(ConfigError, match="epochs must be int"):
        RunConfig(task="svhn", method="linear").with_overrides({"epochs": "many"})
    with pytest.raises(ConfigError, match="unknown task"):
        resolve_config(RunConfig(task="no_such_task", method="linear"))
    with pytest.raises(ConfigError, match="unknown method"):
        resolve_config(RunConfig(task="svhn", method="no_such_method"))
    with pytest.raises(ConfigError, match="lr must be"):
        resolve_config(RunConfig(task="svhn", method="linear", lr=-1.0))
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])


def test_value_parsing_and_eval_cadence():
    assert [parse_value(v) for v in ("1e-3", "50", "true", "None", "[0, 2]", "cls")] == [1e-3, 50, True, None,
                                                                                        [0, 2], "cls"]
    assert eval_epochs(100, 10) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99]  # official cadence
    assert eval_epochs(5, 0) == [4] and eval_epochs(3, 1) == [0, 1, 2]
