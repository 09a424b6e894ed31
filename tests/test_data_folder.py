"""The shared image-folder loader and the preprocessing presets, on tiny generated folders."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from shiplib.data import (PRESETS, VtabFolderDataset, build_dataset, build_transform, check_task_dir, list_tasks,
                          preset_record, read_split_list, resolve_task_dir)
from shiplib.data import folder
from shiplib.errors import DataError
from shiplib.utils import paths

REPO = paths.find_repo_root(__file__)


def _write_task(root, folder_name="svhn", n=(4, 2, 3), bad_label=None):
    """A tiny task folder: JPEG train/val images, PNG (grey) test images, train800val200 pointing into the
    train800/val200 image folders. Labels cycle through 0..9 (svhn has 10 classes)."""
    task_dir = root / folder_name
    rng = np.random.default_rng(0)
    lines = {}
    for split, count, ext in (("train800", n[0], "jpg"), ("val200", n[1], "jpeg"), ("test", n[2], "png")):
        (task_dir / "images" / split).mkdir(parents=True)
        lines[split] = []
        for i in range(count):
            shape = (12, 20) if ext == "png" else (12, 20, 3)  # non-square; test images are grey
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels).save(task_dir / "images" / split / f"{i:06d}.{ext}")
            lines[split].append(f"images/{split}/{i:06d}.{ext} {(i * 3 + len(split)) % 10}")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    if bad_label is not None:
        lines["test"][1] = lines["test"][1].rsplit(" ", 1)[0] + f" {bad_label}"
    for split, ls in lines.items():
        (task_dir / f"{split}.txt").write_text("\n".join(ls) + "\n")
    return task_dir


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.delenv("SHIPLIB_DATA", raising=False)
    _write_task(tmp_path)
    return tmp_path


# ---------------------------------------------------------------- root resolution

def test_resolve_explicit_root_and_env(root, tmp_path, monkeypatch):
    assert resolve_task_dir("svhn", root) == root / "svhn"
    assert resolve_task_dir("vtab-svhn", str(root)) == root / "svhn"
    monkeypatch.setenv("SHIPLIB_DATA", str(root))
    assert resolve_task_dir("svhn") == root / "svhn"
    roots = folder.candidate_roots("vtab1k")
    assert roots == [(root, "$SHIPLIB_DATA"), (REPO / "data" / "vtab-1k", "default")]
    assert folder.candidate_roots("mini")[1][0] == REPO / "data" / "mini-vtab"
    location = folder.locate_task("svhn")
    assert (location.root, location.task_dir, location.source) == (root, root / "svhn", "$SHIPLIB_DATA")


def test_default_root_is_the_project_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SHIPLIB_HOME", raising=False)
    assert folder.default_root("vtab1k") == REPO / "data" / "vtab-1k"
    assert folder.default_root("mini", home=tmp_path) == tmp_path / "data" / "mini-vtab"
    (tmp_path / "data").mkdir()  # a project folder: it holds data/
    monkeypatch.setenv("SHIPLIB_HOME", str(tmp_path))
    assert folder.default_root("mini") == tmp_path / "data" / "mini-vtab"


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_bad_shiplib_data_is_an_error_naming_it(root, tmp_path, monkeypatch, kind):
    value = tmp_path / ("nowhere" if kind == "missing" else "a_file")
    if kind == "file":
        value.write_text("x")
    monkeypatch.setenv("SHIPLIB_DATA", str(value))
    why = "does not exist" if kind == "missing" else "is a file, not a folder"
    with pytest.raises(NotADirectoryError, match=rf"\$SHIPLIB_DATA is '{value}', which {why}"):
        resolve_task_dir("mini_mnist")  # not silently read from the default folder
    assert resolve_task_dir("svhn", root) == root / "svhn"  # an explicit root does not consult it


def test_without_a_project_folder_the_error_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("SHIPLIB_HOME", raising=False)
    monkeypatch.delenv("SHIPLIB_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "_PACKAGE_DIR", tmp_path / "site-packages" / "shiplib")  # as after `pip install`
    with pytest.raises(FileNotFoundError) as e:
        resolve_task_dir("mini_mnist")
    msg = str(e.value)
    assert "SHIPLIB_HOME is not set" in msg and str(tmp_path) in msg and "pyproject.toml" in msg
    with pytest.raises(paths.ProjectRootError, match="SHIPLIB_HOME"):
        paths.project_root()
    monkeypatch.setenv("SHIPLIB_HOME", str(tmp_path / "missing"))
    with pytest.raises(paths.ProjectRootError, match=r"\$SHIPLIB_HOME is '.*missing', which does not exist"):
        paths.project_root()
    monkeypatch.setenv("SHIPLIB_HOME", str(REPO))
    assert resolve_task_dir("mini_mnist") == REPO / "data" / "mini-vtab" / "mini_mnist"


@pytest.mark.parametrize("alias_folder", ["cifar", "Natural/CIFAR100", "CIFAR100"])
def test_alias_folder_is_accepted_with_a_log_line(tmp_path, alias_folder, caplog):
    _write_task(tmp_path, alias_folder)
    with caplog.at_level(logging.WARNING, logger="shiplib.data.folder"):
        d = resolve_task_dir("cifar100", tmp_path)
    assert d == tmp_path / alias_folder
    assert f"alias {alias_folder!r}" in caplog.text and "cifar100" in caplog.text
    ds = VtabFolderDataset("cifar100", "train800", root=tmp_path)
    assert ds.task.name == "cifar100" and len(ds) == 4


def test_canonical_folder_wins_over_alias(tmp_path):
    _write_task(tmp_path, "cifar")
    _write_task(tmp_path, "cifar100")
    assert resolve_task_dir("cifar", tmp_path) == tmp_path / "cifar100"


def test_missing_task_says_how_to_prepare(tmp_path, monkeypatch):
    (tmp_path / "ElseWhere").mkdir()
    monkeypatch.setenv("SHIPLIB_DATA", str(tmp_path / "ElseWhere"))
    with pytest.raises(FileNotFoundError) as e:
        resolve_task_dir("kitti")
    msg = str(e.value)
    assert f"Prepare it with `python -m shiplib.data prepare --task kitti --out {tmp_path / 'ElseWhere'}`" in msg
    assert "SHIPLIB_DATA" in msg and str(folder.default_root("vtab1k")) in msg and "root=" in msg
    with pytest.raises(FileNotFoundError, match="python -m shiplib.data prepare --task dmlab --out"):
        VtabFolderDataset("dmlab", "test", root=tmp_path)


def test_missing_mini_task_says_build_mini(tmp_path):
    mini = list_tasks(benchmark="mini")
    if not mini:
        pytest.skip("shiplib.data.mini_vtab registers no tasks in this checkout")
    with pytest.raises(FileNotFoundError, match="python -m shiplib.data build-mini"):
        resolve_task_dir(mini[0], tmp_path)


# ---------------------------------------------------------------- list files

def test_read_split_list(root):
    samples = read_split_list(root / "svhn", "train800val200")
    assert len(samples) == 6
    assert samples[0] == (root / "svhn" / "images" / "train800" / "000000.jpg", 8)
    assert samples[4][0] == root / "svhn" / "images" / "val200" / "000000.jpeg"  # points into another split


def test_unknown_split_lists_valid_ones(root):
    for call in (lambda: read_split_list(root / "svhn", "train"), lambda: VtabFolderDataset("svhn", "val", root=root)):
        with pytest.raises(ValueError, match="valid splits: train800, val200, train800val200, test"):
            call()


def test_label_out_of_range_names_file_and_line(tmp_path):
    _write_task(tmp_path, bad_label=10)
    with pytest.raises(ValueError) as e:
        VtabFolderDataset("svhn", "test", root=tmp_path)
    assert f"{tmp_path / 'svhn' / 'test.txt'}, line 2" in str(e.value) and "out of range for 10 classes" in str(e.value)
    with pytest.raises(ValueError, match="line 2: label -1 is out of range"):
        _write_task(tmp_path / "b", bad_label=-1)
        read_split_list(tmp_path / "b" / "svhn", "test")


def test_malformed_lines_name_file_and_line(root):
    lst = root / "svhn" / "val200.txt"
    lst.write_text("images/val200/000000.jpeg 1\nimages/val200/000001.jpeg one\n")
    with pytest.raises(ValueError, match=r"val200.txt, line 2: label 'one' is not an integer"):
        read_split_list(root / "svhn", "val200")
    lst.write_text("images/val200/000000.jpeg\n")
    with pytest.raises(ValueError, match=r"line 1: expected '<image path> <label>'"):
        read_split_list(root / "svhn", "val200")


def test_num_classes_from_folder_name_or_argument(root, tmp_path):
    other = tmp_path / "my_task"
    (root / "svhn").rename(other)
    with pytest.raises(ValueError, match="pass num_classes"):
        read_split_list(other, "test")
    assert len(read_split_list(other, "test", num_classes=10)) == 3
    with pytest.raises(ValueError, match="out of range for 2 classes"):
        read_split_list(other, "test", num_classes=2)


def test_missing_list_and_missing_image(root):
    (root / "svhn" / "val200.txt").unlink()
    with pytest.raises(DataError, match="val200.txt: split list is missing"):
        VtabFolderDataset("svhn", "val200", root=root)
    img = root / "svhn" / "images" / "test" / "000002.png"
    img.unlink()
    with pytest.raises(DataError) as e:
        VtabFolderDataset("svhn", "test", root=root)
    assert f"test.txt, line 3: image {img} is missing" in str(e.value)


def test_empty_list_is_named(root):
    (root / "svhn" / "val200.txt").write_text("\n")
    with pytest.raises(DataError, match=r"val200.txt: split list is empty"):
        read_split_list(root / "svhn", "val200")


# ---------------------------------------------------------------- dataset

def test_dataset_items_and_attributes(root):
    ds = VtabFolderDataset("svhn", "test", root=root)
    assert ds.task.name == "svhn" and ds.split == "test" and len(ds) == 3
    assert ds.targets == [lab for _, lab in ds.samples] == [4, 7, 0]
    img, label = ds[1]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (20, 12)  # grey PNG -> RGB
    assert label == 7


def test_build_dataset_gives_normalised_tensors(root):
    ds = build_dataset("svhn", "train800val200", root=root, preset="ship", img_size=16)
    x, y = ds[5]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    assert y == ds.targets[5]
    assert ds.preprocessing == preset_record("ship", 16)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=6)))
    assert batch[0].shape == (6, 3, 16, 16) and batch[1].tolist() == ds.targets


def test_corrupt_image_names_its_file_and_line(root):
    bad = root / "svhn" / "images" / "train800" / "000001.jpg"
    bad.write_bytes(b"not an image at all")
    ds = VtabFolderDataset("svhn", "train800", root=root)
    ds[0]
    with pytest.raises(DataError, match=f"image file {bad} \\(line 2 of train800.txt\\) cannot be decoded"):
        ds[1]
    good = root / "svhn" / "images" / "train800" / "000002.jpg"
    good.write_bytes(good.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(DataError, match=str(good)):
        ds[2]


def test_cache_keeps_decoded_images(root):
    ds = build_dataset("svhn", "val200", root=root, img_size=32, cache=True)
    uncached = VtabFolderDataset("svhn", "val200", root=root)
    first = ds[0][0]
    ds.samples[0][0].unlink()  # served from memory from now on
    assert torch.equal(ds[0][0], first)
    with pytest.raises(DataError, match="000000.jpeg .line 1 of val200.txt. is missing"):
        uncached[0]


def test_check_task_dir_reports_counts_and_problems(root):
    report = check_task_dir("svhn", root, progress=False)
    problems = [str(p) for p in report["problems"]]
    assert report["task"] == "svhn"
    assert report["counts"] == {"train800": 4, "val200": 2, "train800val200": 6, "test": 3}
    assert f"{root / 'svhn' / 'train800.txt'}: 4 examples, expected 800" in problems
    assert not any("labels are not" in p for p in problems)
    (root / "svhn" / "train800val200.txt").write_text(
        "\n".join((root / "svhn" / "train800.txt").read_text().split("\n")[:4][::-1]) + "\n")
    (root / "svhn" / "images" / "test" / "000000.png").write_bytes(b"junk")
    problems = [str(p) for p in check_task_dir("svhn", root, progress=False)["problems"]]
    assert "train800val200.txt: its labels are not those of train800 followed by val200" in " ".join(problems)
    assert any("test.txt, line 1" in p and "000000.png cannot be decoded" in p for p in problems)


def test_cli_check_and_list(root, capsys):
    from shiplib.data.__main__ import main

    assert main(["check", "--task", "svhn", "--root", str(root)]) == 1  # 3 test images, not 26,032
    out = capsys.readouterr().out
    assert "svhn: 4 problem(s)" in out and "test.txt: 3 examples, expected 26032" in out
    assert main(["list", "--benchmark", "vtab1k", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert str(root / "svhn") in out and out.count("missing") == 18
    assert main(["check", "--task", "svhnn"]) == 2
    assert "Did you mean 'svhn'" in capsys.readouterr().err


# ---------------------------------------------------------------- transforms

def _img(value, size=(30, 20), mode="RGB"):
    return Image.new(mode, size, value)


def test_ship_preset_values_and_shape():
    t = build_transform("ship", 24)
    assert t(_img((255, 255, 255))).shape == (3, 24, 24)
    assert torch.allclose(t(_img((255, 255, 255))), torch.ones(3, 24, 24))
    assert torch.allclose(t(_img((0, 0, 0))), -torch.ones(3, 24, 24))
    assert torch.allclose(t(_img((128, 64, 0)))[:, 0, 0], torch.tensor([128, 64, 0]) / 255 * 2 - 1)


def test_ship_preset_is_bicubic_exact_resize():
    arr = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    expected = TF.normalize(TF.to_tensor(img.resize((16, 16), Image.BICUBIC)), [0.5] * 3, [0.5] * 3)
    assert torch.allclose(build_transform("ship", 16)(img), expected, atol=1e-6)
    expected_vpt = TF.normalize(TF.to_tensor(img.resize((16, 16), Image.BILINEAR)),
                                [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert torch.allclose(build_transform("vpt", 16)(img), expected_vpt, atol=1e-6)


def test_vpt_preset_uses_imagenet_statistics():
    x = build_transform("vpt", 8)(_img((255, 255, 255)))
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(x[:, 0, 0], (1 - mean) / std)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_presets_convert_to_rgb(mode):
    assert build_transform("ship", 8)(_img(0 if mode in "LP" else (0,) * len(mode), mode=mode)).shape == (3, 8, 8)


def test_preset_record_and_errors():
    rec = preset_record("ship", 224)
    assert json.loads(json.dumps(rec)) == rec
    assert rec["resize"] == [224, 224] and rec["interpolation"] == "bicubic" and rec["mean"] == [0.5] * 3
    assert preset_record("vpt", 384)["std"] == [0.229, 0.224, 0.225]
    assert set(PRESETS) == {"ship", "vpt"}
    with pytest.raises(ValueError, match="valid presets: ship, vpt"):
        build_transform("timm", 224)
    with pytest.raises(ValueError, match="valid presets"):
        preset_record("SHIP", 224)
    for bad in (0, -3, 22.5, "224", True):
        with pytest.raises(ValueError, match="img_size must be a positive int"):
            build_transform("ship", bad)
