"""Run preparation: per-epoch data order, backbone fingerprint, SHIP's hierarchy cache."""
import numpy as np
import torch

from shiplib.backbones import create_backbone
from shiplib.data.folder import build_dataset
from shiplib.engine.prepare import (backbone_fingerprint, derived_seed, hierarchy_cache_path,
                                    load_or_compute_hierarchy, train_loader)


def test_epoch_order_depends_only_on_seed_and_epoch():
    data = torch.utils.data.TensorDataset(torch.arange(50).float(), torch.arange(50))

    def order(seed, epoch):
        torch.manual_seed(1234 + epoch)  # the global RNG must not matter
        return torch.cat([y for _, y in train_loader(data, 8, seed, epoch)]).tolist()

    assert order(1, 3) == order(1, 3)
    assert order(1, 3) != order(1, 4) and order(1, 3) != order(2, 3)
    assert len(order(1, 0)) == 48  # drop_last
    assert derived_seed(1, 2) == derived_seed(1, 2) != derived_seed(2, 1)


def test_fingerprint_tracks_backbone_weights(tiny_vit_file):
    a = create_backbone(str(tiny_vit_file))
    b = create_backbone(str(tiny_vit_file))
    assert backbone_fingerprint(a) == backbone_fingerprint(b)
    with torch.no_grad():
        b.blocks[0].mlp.fc1.weight[0, 0] += 1e-3
    assert backbone_fingerprint(a) != backbone_fingerprint(b)


def test_hierarchy_computed_once_then_read_from_cache(tiny_task_root, tiny_vit_file, tmp_path):
    vit = create_backbone(str(tiny_vit_file))
    data = build_dataset("svhn", "train800val200", root=tiny_task_root, img_size=32)
    fp = backbone_fingerprint(vit)
    path = hierarchy_cache_path(tmp_path, "vtab1k", "svhn", str(tiny_vit_file), fp, "cls", "train800val200", 8,
                                "ship", 32)
    assert path.parent == tmp_path / "_cache" / "vtab1k" / "svhn" and path.name.startswith("tiny_vit-")
    first = load_or_compute_hierarchy(vit, data, path, threshold=0.9, pool="cls", k=8, batch_size=32,
                                      device=torch.device("cpu"), progress=False)
    assert not first["cached"] and path.is_file()
    assert first["affinity"].shape == (4, 4) and first["prototypes"].shape == (8, 32) and first["num_images"] == 64
    second = load_or_compute_hierarchy(vit, data, path, threshold=0.9, pool="cls", k=8, batch_size=32,
                                       device=torch.device("cpu"), progress=False)
    assert second["cached"]
    np.testing.assert_array_equal(first["affinity"], second["affinity"])
    np.testing.assert_array_equal(first["prototypes"], second["prototypes"])
