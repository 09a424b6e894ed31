"""The committed Fashion-MNIST mini backbone (`mini_fmnist`: checkpoint + card) and the evidence machinery
recorded in mini backbone cards."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from timm.models.vision_transformer import VisionTransformer

from shiplib.data import list_tasks
from shiplib.backbones import MINI_ARCH, create_backbone, create_mini_vit, load_state_dict_file, mini
from shiplib.backbones.evidence import add_evidence_to_card, compute_evidence, linear_probe
from shiplib.backbones.loading import state_dict_architecture
from shiplib.hierarchy import validate_affinity
from shiplib.utils.io import sha256_file

from _backbone_cards import card_fixtures

CARD_FIELDS = ("name", "description", "architecture", "parameters", "data", "training", "epochs", "seed",
               "test_accuracy", "history", "wall_time_minutes", "file", "sha256", "licence")
MAX_CHECKPOINT_BYTES = 10 * 1024 * 1024
NAME = "mini_fmnist"


checkpoint, card = card_fixtures(NAME)


# ---------------------------------------------------------------- the committed checkpoint


def test_card_has_every_field(card):
    missing = [f for f in CARD_FIELDS if f not in card]
    assert not missing, f"card lacks {missing}"
    assert card["file"] == mini.mini_checkpoint_path(name=NAME).name
    # an interim export (run not finished) records how many epochs its weights have seen
    assert len(card["history"]) == card.get("epochs_completed", card["epochs"]) <= card["epochs"]
    assert card.get("complete", True) == (len(card["history"]) == card["epochs"])
    assert card["history"][-1]["test_acc"] == pytest.approx(card["test_accuracy"], abs=0.01)
    assert card["data"]["name"] == "Fashion-MNIST" and "MIT" in card["data"]["licence"]


def test_sha256_matches_the_file(checkpoint, card):
    assert sha256_file(checkpoint) == card["sha256"]


def test_checkpoint_is_small(checkpoint):
    assert checkpoint.stat().st_size <= MAX_CHECKPOINT_BYTES


def test_architecture_matches_mini_arch(checkpoint, card):
    arch = {k: v for k, v in card["architecture"].items() if k not in ("timm_class", "num_classes")}
    assert arch == MINI_ARCH
    sd = load_state_dict_file(checkpoint)
    inferred = state_dict_architecture(sd, num_heads=MINI_ARCH["num_heads"])
    assert {k: inferred[k] for k in ("patch_size", "in_chans", "embed_dim", "depth", "mlp_ratio", "img_size")} == {
        k: MINI_ARCH[k] for k in ("patch_size", "in_chans", "embed_dim", "depth", "mlp_ratio", "img_size")}
    full = create_mini_vit(num_classes=card["architecture"]["num_classes"])
    full.load_state_dict(sd)  # strict: every tensor, head included


def test_checkpoint_path_spec_equals_mini(checkpoint):
    """Loading the file by path (its card is the sidecar that names the heads) gives the same backbone."""
    by_name, by_path = create_backbone(NAME).eval(), create_backbone(str(checkpoint)).eval()
    x = torch.randn(4, 3, MINI_ARCH["img_size"], MINI_ARCH["img_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(by_name(x), by_path(x))


def test_accuracy_on_a_test_subset_matches_the_card(checkpoint, card):
    from shiplib.backbones.pretrain_mini import evaluate_classifier, fmnist_tensors

    try:
        x, y = fmnist_tensors("test", size=MINI_ARCH["img_size"])
    except FileNotFoundError as e:
        pytest.skip(f"Fashion-MNIST is not installed: {e}")
    idx = torch.arange(0, len(x), len(x) // 2000)[:2000]  # every 5th image: all classes, fixed
    model = create_mini_vit(num_classes=card["architecture"]["num_classes"])
    model.load_state_dict(load_state_dict_file(checkpoint))
    acc = evaluate_classifier(model, x[idx], y[idx])
    assert abs(acc - card["test_accuracy"]) <= 2.0, f"subset accuracy {acc:.2f} vs card {card['test_accuracy']}"


def test_card_meets_the_accuracy_and_time_targets(card):
    """Issue 4's targets: at least 90 % on the 10,000 test images, pretrained within 90 minutes on 2 CPU cores."""
    assert card["data"]["test_images"] == 10000
    assert card["test_accuracy"] >= 90.0, f"{card['test_accuracy']} % < the 90 % target"
    assert card["wall_time_minutes"] <= 90 and card["machine"]["cpu_threads"] <= 2


def test_card_has_the_evidence(card):
    ev = card.get("evidence")
    assert ev is not None, ("no evidence in the card: "
                            "papermill notebooks/pretrain_mini.ipynb out.ipynb -p write_card True")
    assert set(ev["linear_probe"]["tasks"]) == set(list_tasks("mini")), "a probe for every mini-VTAB task"
    rows = ev["linear_probe"]["tasks"]
    assert rows and all({"pretrained", "random_init"} <= set(r) for r in rows.values())
    # what the README claims: Fashion-MNIST features are shape features, far better than random ones where shape and
    # position decide (on colour, texture and counting random features win; the mean is close to random's)
    for task in ("mini_mnist", "mini_dsprites_loc", "mini_dsprites_ori"):
        acc = {k: rows[task][k]["test_acc"] for k in ("pretrained", "random_init")}
        assert acc["pretrained"] >= acc["random_init"] + 5.0, f"{task}: {acc}"
    for name, matrix in ev["affinity"]["matrices"].items():
        A = validate_affinity(np.array(matrix), atol=1e-3, name=f"{name} affinity")
        assert A.shape == (MINI_ARCH["depth"],) * 2


# ---------------------------------------------------------------- evidence machinery (no checkpoint needed)


def test_linear_probe_separates_separable_and_not_random_labels():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 4

    def make(n, shuffle=False):
        y = rng.integers(0, 3, n)
        x = centres[y] + rng.normal(size=(n, 8))
        return x, (rng.permutation(y) if shuffle else y)

    good = linear_probe(make(300), make(100), make(300))
    assert good["test_acc"] > 95 and good["C"] in (0.01, 0.1, 1.0, 10.0)
    noise = linear_probe(make(300, True), make(100, True), make(300, True))
    assert noise["test_acc"] < 50  # chance is 33 %


def _write_folder_task(root, task: str, sizes: dict[str, int], seed: int = 0):
    """A tiny task in the VTAB folder layout: class 0 dark images, class 1 bright ones."""
    rng = np.random.default_rng(seed)
    task_dir = root / task
    lines = {}
    for split, n in sizes.items():
        (task_dir / "images" / split).mkdir(parents=True)
        lines[split] = []
        for i in range(n):
            label = i % 2
            pixels = rng.integers(0, 100, (32, 32, 3)) + 150 * label
            Image.fromarray(pixels.astype(np.uint8)).save(task_dir / "images" / split / f"{i:06d}.png")
            lines[split].append(f"images/{split}/{i:06d}.png {label}")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, rows in lines.items():
        (task_dir / f"{split}.txt").write_text("\n".join(rows) + "\n")


def test_compute_evidence_end_to_end_on_a_tiny_folder_task(tmp_path):
    _write_folder_task(tmp_path, "svhn", {"train800": 24, "val200": 8, "test": 16})
    arch = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=0)
    torch.manual_seed(0)
    a, b = VisionTransformer(**arch), VisionTransformer(**arch)
    ev = compute_evidence(a, b, tasks=["svhn"], root=tmp_path)
    row = ev["linear_probe"]["tasks"]["svhn"]
    assert row["test_images"] == 16
    assert row["pretrained"]["test_acc"] >= 90 and row["random_init"]["test_acc"] >= 90  # brightness is easy
    assert ev["affinity"]["task"] == "svhn"
    for m in ev["affinity"]["matrices"].values():
        assert validate_affinity(np.array(m), atol=1e-3).shape == (3, 3)
    assert len(ev["affinity"]["adjacent"]["pretrained"]) == 2
    json.dumps(ev)  # the card is JSON


def test_add_evidence_to_card_checks_the_weights(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"some weights")
    card_path = tmp_path / "w.json"
    card_path.write_text(json.dumps({"name": "w", "file": weights.name, "sha256": sha256_file(weights)}))
    card = add_evidence_to_card({"linear_probe": {"x": 1}}, card_path)
    assert json.loads(card_path.read_text()) == card and card["evidence"] == {"linear_probe": {"x": 1}}
    assert sha256_file(weights) == card["sha256"]
    weights.write_bytes(b"other weights")
    with pytest.raises(ValueError, match="other weights"):
        add_evidence_to_card({"linear_probe": {}}, card_path)
    with pytest.raises(FileNotFoundError, match="pretrain"):
        add_evidence_to_card({}, tmp_path / "absent.json")


def test_mini_backbone_feeds_the_hierarchy():
    """The mini backbone (random here) gives the 12 x 12 affinity the hierarchy code expects."""
    from shiplib.hierarchy import extract_block_features, inter_layer_affinity

    vit = create_backbone("mini", pretrained=False)
    x = torch.randn(8, 3, MINI_ARCH["img_size"], MINI_ARCH["img_size"])
    A = inter_layer_affinity(extract_block_features(vit, x, progress=False))
    assert validate_affinity(A).shape == (MINI_ARCH["depth"], MINI_ARCH["depth"])


def test_card_recipe_is_the_default_pretrain_config(card):
    """`pretrain_mini()` with its defaults is the run that made the committed checkpoint."""
    from dataclasses import asdict

    from shiplib.backbones.pretrain_mini import PretrainConfig

    defaults = {k: v for k, v in asdict(PretrainConfig()).items() if k != "threads"}
    assert {k: card["training"].get(k) for k in defaults} == defaults
    assert card["complete"] and card["epochs_completed"] == card["epochs"] == defaults["epochs"]
