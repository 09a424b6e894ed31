"""VTAB-1k preparation from TFDS: label/image rules on hand-made examples, and all 19 tasks end to end on
`tfds.testing.mock_data` (random examples, no download, no TensorFlow)."""
from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from shiplib.data import VtabFolderDataset, get_task, list_tasks, read_split_list
from shiplib.data.tfds_prepare import PrepareError, derive_image, derive_label, ensure_generated, prepare_task

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed (pip install .[data])")
mocking = pytest.importorskip("tensorflow_datasets.testing.mocking", reason="this TFDS has no testing.mocking")

N = 40  # examples per mocked TFDS split
SIZES = (8, 4)  # train/val sizes for mock builds (VTAB's 800/200 need >= 2,000-example splits)


# ---------------------------------------------------------------- label and image rules

def _clevr_scene(depths):
    return {"objects": {"pixel_coords": np.array([[5.0, 5.0, d] for d in depths]).reshape(-1, 3),
                        "size": np.zeros(len(depths), np.int64)}}


def _kitti_frame(kinds, z):
    return {"objects": {"type": np.array(kinds, np.int64),
                        "location": np.array([[0.0, 1.0, d] for d in z]).reshape(-1, 3)}}


@pytest.mark.parametrize("depths, label", [((8.0,), 0), ((7.2, 9.0), 0), ((8.01,), 1), ((8.5,), 1), ((8.6, 12.0), 2),
                                           ((9.5,), 3), ((9.51,), 4), ((10.0,), 4), ((10.2, 30.0), 5)])
def test_clevr_closest_distance(depths, label):
    assert derive_label(get_task("clevr_dist"), _clevr_scene(depths)) == label


@pytest.mark.parametrize("n, label", [(3, 0), (4, 1), (10, 7)])
def test_clevr_count(n, label):
    assert derive_label(get_task("clevr_count"), _clevr_scene((9.0,) * n)) == label


@pytest.mark.parametrize("kinds, z, label", [
    ((), (), 3),                       # no objects at all
    ((3, 5, 7), (2.0, 3.0, 4.0), 3),   # pedestrian, cyclist, misc: no vehicle
    ((0,), (8.0,), 0), ((1,), (8.5,), 1), ((2,), (20.0,), 1), ((2,), (20.5,), 2),
    ((3, 1, 0), (1.0, 30.0, 15.0), 1),  # the nearest *vehicle* counts, not the pedestrian
])
def test_kitti_closest_vehicle_distance(kinds, z, label):
    assert derive_label(get_task("kitti"), _kitti_frame(kinds, z)) == label


def test_dsprites_and_smallnorb_labels():
    loc, ori = get_task("dsprites_loc"), get_task("dsprites_ori")
    assert [derive_label(loc, {"label_x_position": x}) for x in (0, 1, 2, 30, 31)] == [0, 0, 1, 15, 15]
    assert [derive_label(ori, {"label_orientation": o}) for o in (0, 2, 3, 5, 37, 39)] == [0, 0, 1, 2, 14, 15]
    assert sorted({derive_label(ori, {"label_orientation": o}) for o in range(40)}) == list(range(16))
    ex = {"label_azimuth": np.int64(17), "label_elevation": np.int64(8)}
    assert derive_label(get_task("smallnorb_azi"), ex) == 17 and derive_label(get_task("smallnorb_ele"), ex) == 8
    assert derive_label(get_task("cifar"), {"label": np.int64(99), "coarse_label": 3}) == 99


def test_inconsistent_objects_are_rejected():
    bad = {"objects": {"type": np.array([0, 1]), "location": np.zeros((3, 3))}}
    with pytest.raises(ValueError, match="inconsistent per-object feature lengths"):
        derive_label(get_task("kitti"), bad)


def test_images_become_3_channel_uint8():
    binary = np.zeros((64, 64, 1), np.uint8)
    binary[10:20, 5:9] = 1
    img = derive_image(get_task("dsprites_ori"), {"image": binary})
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and set(np.unique(img)) == {0, 255}
    assert (img[..., 2] == binary[..., 0] * 255).all()
    grey = np.arange(96 * 96, dtype=np.uint8).reshape(96, 96, 1)
    img = derive_image(get_task("smallnorb_azi"), {"image": grey, "image2": grey * 0})
    assert img.shape == (96, 96, 3) and (img[..., 1] == grey[..., 0]).all()
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert (derive_image(get_task("svhn"), {"image": rgb}) == rgb).all()


# ---------------------------------------------------------------- mock TFDS

class _FakeSplit(Sequence):
    """TFDS's own random fake examples for a builder's features, one generator per split. Per-object sequences
    are made consistent (TFDS's fake generator draws each sub-feature's length independently): CLEVR scenes
    get 3 + (index % 8) objects at depths 7..11, KITTI frames (index % 5) objects at 0..40 m."""

    def __init__(self, features, split: str):
        self.gen = mocking.RandomFakeGenerator(features, N, seed={"train": 0, "validation": 1000, "test": 2000}[split])

    def __len__(self):
        return N

    def __getitem__(self, i):
        if not 0 <= i < N:
            raise IndexError(i)
        ex = self.gen[i]
        objects = ex.get("objects")
        if isinstance(objects, dict):
            k = 3 + i % 8 if "pixel_coords" in objects else i % 5
            objects = {key: np.resize(np.asarray(v), (k, *np.shape(v)[1:])) for key, v in objects.items()}
            if "pixel_coords" in objects:
                objects["pixel_coords"][:, 2] = 7 + 4 * objects["pixel_coords"][:, 2]
            else:
                objects["location"][:, 2] *= 40
            ex["objects"] = objects
        return ex


def _as_data_source(builder, split, **_):
    return _FakeSplit(builder.info.features, str(split))


@pytest.fixture
def mock_tfds():
    with tfds.testing.mock_data(num_examples=N, as_data_source_fn=_as_data_source):
        yield


@pytest.fixture
def manual_dir(tmp_path):
    """The file names TFDS expects in manual_dir for resisc45 and diabetic_retinopathy (content unused: mocked)."""
    d = tmp_path / "manual"
    for sub in ("NWPU-RESISC45", "train", "test", "sample"):
        (d / sub).mkdir(parents=True)
    (d / "trainLabels.csv").write_text("image,level\n")
    return d


def test_prepare_all_19_tasks_on_mock_data(tmp_path, mock_tfds, manual_dir):
    out = tmp_path / "vtab-1k"
    tasks = list_tasks(benchmark="vtab1k")
    assert len(tasks) == 19
    for name in tasks:
        spec = get_task(name)
        task_dir = prepare_task(name, out, manual_dir=manual_dir, progress=False, _testing_sizes=SIZES)
        assert task_dir == out / name
        rec = json.loads((task_dir / "prepare.json").read_text())
        rule = spec.meta["split_rule"]
        sources = {"train", rule.val_split, rule.test_split}
        assert rec["source_split_sizes"] == {s: N for s in sorted(sources)}
        assert rec["vtab_sizes"] is False and rec["tfds_name"] == spec.meta["tfds_name"]
        assert rec["tfds_version"] and rec["tensorflow_datasets"] == tfds.__version__ and rec["created"]
        test_n = N - rule.test_start_pct * N // 100
        assert rec["counts"] == {"train800": 8, "val200": 4, "test": test_n, "train800val200": 12}, name
        assert sorted(p.name for p in task_dir.iterdir()) == [
            "images", "prepare.json", "test.txt", "train800.txt", "train800val200.txt", "val200.txt"]
        lists = {s: read_split_list(task_dir, s, num_classes=spec.num_classes) for s in rec["counts"]}
        for split, samples in lists.items():
            assert len(samples) == rec["counts"][split]
            assert [p.name for p, _ in samples] == [f"{i:06d}.jpg" for i in range(len(samples))]
            assert all(p.parent == task_dir / "images" / split for p, _ in samples)
            assert all(0 <= lab < spec.num_classes for _, lab in samples)
        assert [lab for _, lab in lists["train800val200"]] == [lab for _, lab in lists["train800"] + lists["val200"]]
        with Image.open(lists["test"][0][0]) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
        if spec.meta["image_rule"] != "rgb":
            assert Image.open(lists["train800"][0][0]).size == ((64, 64) if "dsprites" in name else (96, 96))
    # the labels follow the source indices: CLEVR scene i has 3 + i % 8 objects
    count = read_split_list(out / "clevr_count", "train800val200")
    val_start = 90 * N // 100
    assert [lab for _, lab in count] == [i % 8 for i in range(8)] + [i % 8 for i in range(val_start, val_start + 4)]
    assert len({lab for _, lab in read_split_list(out / "kitti", "test")}) == 4  # every distance bin occurs
    ds = VtabFolderDataset("oxford_iiit_pet", "train800val200", root=out)  # loads through an alias name
    assert len(ds) == 12 and ds[0][0].size[0] > 0


def test_vtab_default_sizes_via_cli(tmp_path, capsys):
    """The real 800/200 slices on a mocked svhn of 2,000 examples per split, through the CLI."""
    from shiplib.data.__main__ import main

    with tfds.testing.mock_data(num_examples=2000):
        assert main(["prepare", "--task", "Natural/SVHN", "--out", str(tmp_path), "--format", "png"]) == 0
        assert "svhn" in capsys.readouterr().out
        rec = json.loads((tmp_path / "svhn" / "prepare.json").read_text())
        assert rec["splits"] == {"train800": "train[:800]", "val200": "train[1800:]",
                                 "train800val200": "train[:800]+train[1800:]", "test": "test"}
        assert rec["counts"] == {"train800": 800, "val200": 200, "test": 2000, "train800val200": 1000}
        assert rec["vtab_sizes"] is True and rec["format"] == "png"
        assert (tmp_path / "svhn" / "images" / "val200" / "000199.png").is_file()
        # a second run keeps the complete folder
        before = (tmp_path / "svhn" / "prepare.json").read_text()
        assert main(["prepare", "--task", "svhn", "--out", str(tmp_path)]) == 0
        assert (tmp_path / "svhn" / "prepare.json").read_text() == before
    # check: labels and images fine; the test count differs from VTAB's 26,032, and TFDS's mock data repeats the
    # training examples in its test split, which the check names as leakage
    assert main(["check", "--task", "svhn", "--root", str(tmp_path), "--max-images", "5"]) == 1
    out = capsys.readouterr().out
    assert "svhn: 2 problem(s)" in out and "test.txt: 2000 examples, expected 26032" in out
    assert "are also in train800val200 (same content)" in out


@pytest.mark.parametrize("task, needle", [("resisc45", "NWPU-RESISC45"), ("diabetic_retinopathy", "trainLabels.csv")])
def test_manual_download_tasks_print_instructions(tmp_path, mock_tfds, task, needle):
    empty = tmp_path / "manual"
    with pytest.raises(PrepareError) as e:
        prepare_task(task, tmp_path / "out", manual_dir=empty, progress=False, _testing_sizes=SIZES)
    assert needle in str(e.value) and str(empty) in str(e.value) and "--manual-dir" in str(e.value)
    assert not (tmp_path / "out" / get_task(task).name).exists()


def test_cli_reports_manual_download_without_traceback(tmp_path, mock_tfds, capsys, caplog):
    from shiplib.data.__main__ import main

    rc = main(["prepare", "--task", "resisc45", "--out", str(tmp_path), "--manual-dir", str(tmp_path / "m")])
    captured = capsys.readouterr()
    assert rc == 1 and "resisc45" in captured.out and "error (see above)" in captured.out
    assert "resisc45 must be downloaded by hand" in caplog.text + captured.err
    assert "Traceback" not in captured.out + captured.err + caplog.text


def test_version_fallback_is_recorded_or_refused(tmp_path, mock_tfds):
    # TFDS 4.9.10 no longer serves oxford_iiit_pet 3.x, which VTAB-1k used
    rec = json.loads((prepare_task("oxford_pet", tmp_path, progress=False, _testing_sizes=SIZES)
                      / "prepare.json").read_text())
    if rec["tfds_version"].startswith("3."):
        pytest.skip("this TFDS still provides oxford_iiit_pet 3.x")
    assert "VTAB-1k used oxford_iiit_pet:3.*.*" in rec["tfds_version_note"]
    with pytest.raises(PrepareError, match=r"cannot provide oxford_iiit_pet:3\.\*\.\*"):
        prepare_task("oxford_pet", tmp_path, strict_version=True, overwrite=True, progress=False,
                     _testing_sizes=SIZES)


def test_refuses_foreign_folder_and_mini_tasks(tmp_path, mock_tfds):
    (tmp_path / "dtd").mkdir()
    with pytest.raises(PrepareError, match="has no prepare.json"):
        prepare_task("dtd", tmp_path, progress=False, _testing_sizes=SIZES)
    assert prepare_task("dtd", tmp_path, overwrite=True, progress=False, _testing_sizes=SIZES) == tmp_path / "dtd"
    with pytest.raises(PrepareError, match="unknown image format 'webp'"):
        prepare_task("svhn", tmp_path, fmt="webp")
    mini = list_tasks(benchmark="mini")
    if mini:
        with pytest.raises(PrepareError, match="build-mini"):
            prepare_task(mini[0], tmp_path)


def test_generation_without_tensorflow_gives_install_hint(tmp_path, monkeypatch):
    """A builder whose generation hits a missing module (as TFDS does without TensorFlow) -> install hint."""
    spec = get_task("svhn")
    builder = tfds.builder("svhn_cropped", data_dir=str(tmp_path))

    def no_tensorflow(**_):
        raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")

    monkeypatch.setattr(builder, "download_and_prepare", no_tensorflow)
    with pytest.raises(PrepareError, match=r"pip install tensorflow-cpu scipy`"):
        ensure_generated(spec, builder)

    def no_resources(**_):
        raise ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources")

    monkeypatch.setattr(builder, "download_and_prepare", no_resources)
    with pytest.raises(PrepareError, match=r"pip install tensorflow-cpu scipy importlib-resources`"):
        ensure_generated(spec, builder)
