"""The VTAB-1k registry entries against the reference table (vtab1k_tasks.csv) and the split-rule arithmetic."""
from __future__ import annotations

import csv
import re

import pytest

from shiplib.data import get_task, list_tasks
from shiplib.data.splits import SPLITS
from shiplib.data.vtab1k import SplitRule

CANONICAL = ["caltech101", "cifar100", "dtd", "oxford_flowers102", "oxford_pet", "svhn", "sun397",
             "patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy", "clevr_count", "clevr_dist", "dmlab",
             "kitti", "dsprites_loc", "dsprites_ori", "smallnorb_azi", "smallnorb_ele"]


@pytest.fixture(scope="module")
def reference_rows(reference_dir):
    with open(reference_dir / "vtab1k_tasks.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["task"] for r in rows] == CANONICAL
    return rows


def test_all_19_tasks_registered_in_order():
    assert list_tasks(benchmark="vtab1k") == CANONICAL
    groups = {g: list_tasks(benchmark="vtab1k", group=g) for g in ("natural", "specialized", "structured")}
    assert [len(v) for v in groups.values()] == [7, 4, 8]


def test_metadata_matches_reference(reference_rows):
    for row in reference_rows:
        spec = get_task(row["task"])
        assert spec.benchmark == "vtab1k"
        assert spec.group == row["group"]
        assert spec.num_classes == int(row["num_classes"])
        assert spec.test_size == int(re.match(r"\d+", row["test_size"]).group())
        assert spec.meta["tfds_version_vpt"] == row["tfds_version_vpt"]
        builder = row["tfds_builder_task_adaptation"].split(":")[0]
        assert spec.meta["tfds_name"] == builder
        assert spec.meta["tfds_version"] in row["tfds_builder_task_adaptation"]


def test_every_reference_alias_resolves(reference_rows):
    columns = ["alias_get_vtab1k_folder", "alias_petl_vision", "alias_spt_path", "alias_vpt_data_name"]
    for row in reference_rows:
        names = [row[c] for c in columns] + [row["alias_spt_path"].split("/")[-1]]
        for name in names:
            assert get_task(name).name == row["task"], name
            assert get_task(name.upper()).name == row["task"]  # lookup is case-insensitive


def test_named_aliases():
    assert get_task("cifar").name == "cifar100"
    assert get_task("CIFAR100").name == "cifar100"  # VTAB-only registry: documented in vtab1k.py
    assert get_task("oxford_iiit_pet").name == "oxford_pet"
    assert get_task("Retinopathy").name == "diabetic_retinopathy"
    assert get_task('vtab-kitti(task="closest_vehicle_distance")').name == "kitti"
    assert get_task("  svhn ").name == "svhn"


@pytest.mark.parametrize("typo, expected", [("cifr", "cifar100"), ("smallnorb_az", "smallnorb_azi"),
                                             ("clever_count", "clevr_count"), ("dsprite_loc", "dsprites_loc")])
def test_unknown_name_suggests_closest(typo, expected):
    with pytest.raises(KeyError) as e:
        get_task(typo)
    msg = e.value.args[0]
    assert f"Did you mean {expected!r}" in msg and "Valid tasks:" in msg
    assert msg.count(repr(expected)) == 1  # a task reached through several aliases is suggested once


def test_unknown_name_without_close_match_lists_tasks():
    with pytest.raises(KeyError, match="Valid tasks: caltech101"):
        get_task("imagenet21k_zzz")


# ---- split slices against the reference table ----

def _parse_sizes(text: str) -> dict[str, int]:
    return {s: int(n.replace(",", "")) for s, n in re.findall(r"(train|validation|test) ([\d,]+)", text)}


def _parse_slices(text: str, sizes: dict[str, int]) -> list[tuple[str, int, int]]:
    """`train[:800] + train[2754:2954]`, `test[50%:]`, `validation  (note)` -> index ranges."""
    text = text.split("  (")[0].strip()
    out = []
    for part in text.split("+"):
        m = re.fullmatch(r"\s*(train|validation|test)(?:\[(\d*%?):(\d*%?)\])?\s*", part)
        assert m, part
        split, a, b = m.groups()
        n = sizes[split]

        def idx(v, default):
            if not v:
                return default
            return int(v[:-1]) * n // 100 if v.endswith("%") else int(v)
        out.append((split, idx(a, 0), idx(b, n)))
    return out


def test_split_slices_match_reference(reference_rows):
    for row in reference_rows:
        spec = get_task(row["task"])
        sizes = _parse_sizes(row["tfds_source_split_sizes"])
        assert spec.meta["tfds_source_sizes"] == {s: sizes[s] for s in spec.meta["tfds_source_sizes"]}, row["task"]
        segments = spec.meta["split_rule"].segments(spec.meta["tfds_source_sizes"])
        for split in SPLITS:
            assert segments[split] == _parse_slices(row[split], sizes), (row["task"], split)
        # the slice strings stored in meta denote the same ranges
        for split in SPLITS:
            assert _parse_slices(spec.meta["splits"][split], sizes) == segments[split]


def test_split_sizes_are_vtab1k_without_reference():
    for name in CANONICAL:
        spec = get_task(name)
        seg = spec.meta["split_rule"].segments(spec.meta["tfds_source_sizes"])
        count = {s: sum(b - a for _, a, b in v) for s, v in seg.items()}
        assert count == {"train800": 800, "val200": 200, "train800val200": 1000, "test": spec.test_size}, name


def test_literal_slices_of_tricky_tasks():
    assert get_task("svhn").meta["splits"]["val200"] == "train[65931:66131]"
    assert get_task("smallnorb_ele").meta["splits"] == {
        "train800": "train[:800]", "val200": "test[:200]", "train800val200": "train[:800]+test[:200]",
        "test": "test[12150:]"}
    assert get_task("clevr_dist").meta["splits"]["test"] == "validation"
    assert get_task("dsprites_ori").meta["splits"]["test"] == "train[663552:]"
    assert get_task("kitti").meta["tfds_version"] == "3.2.0"


def test_split_rule_rejects_overlap_and_overflow():
    rule = SplitRule("train", 60, "train", 80)
    with pytest.raises(ValueError, match="overlap"):
        rule.segments({"train": 1000})  # val200 = train[600:800] lies inside train800 = train[:800]
    with pytest.raises(ValueError, match="does not fit"):
        SplitRule("validation", 0, "test").segments({"train": 1000, "validation": 100, "test": 50})
    with pytest.raises(ValueError, match="size of TFDS split 'validation'"):
        SplitRule("validation", 0, "test").segments({"train": 1000, "test": 50})
    small = rule.segments({"train": 100}, train_size=8, val_size=4)
    assert small == {"train800": [("train", 0, 8)], "val200": [("train", 60, 64)],
                     "train800val200": [("train", 0, 8), ("train", 60, 64)], "test": [("train", 80, 100)]}
