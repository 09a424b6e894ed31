"""Run preparation: per-epoch data order, backbone fingerprint, the cache of a method's data step."""
import numpy as np
import torch

from shiplib.backbones import create_backbone
from shiplib.backbones.fingerprint import backbone_fingerprint
from shiplib.data.folder import build_dataset
from shiplib.engine.config import RunConfig, resolve_config
from shiplib.engine.prepare import (data_cache_path, dataset_fingerprint, derived_seed, eval_loader,
                                    load_or_compute_data_inputs, train_loader)
from shiplib.methods import get_method


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


def test_data_step_computed_once_then_read_from_cache(tiny_task_root, tiny_vit_file, tmp_path, capsys,
                                                      monkeypatch):
    monkeypatch.setenv("SHIPLIB_PROGRESS", "lines")  # bars would print lines to stdout
    vit = create_backbone(str(tiny_vit_file))
    data = build_dataset("svhn", "train800val200", root=tiny_task_root, img_size=32)
    ship = get_method("ship")

    run = resolve_config(RunConfig(task="svhn", method="ship", backbone=str(tiny_vit_file), img_size=32,
                                   runs_dir=str(tmp_path)))

    def cache(**options):
        config = ship.config_class.from_options("ship", dict(threshold=0.9, **options))
        path = data_cache_path(run, backbone_fingerprint(vit), dataset_fingerprint(data), ship.data_key(config))
        return config, path

    config, path = cache(num_prototypes=8)
    assert path.parent == tmp_path / "_cache" / "vtab1k" / "svhn" and path.name.startswith("tiny_vit-")
    first, cached = load_or_compute_data_inputs(ship, config, vit, eval_loader(data, 32), path, progress=False)
    assert not cached and path.is_file()
    assert "block features" not in capsys.readouterr().out  # a run without progress bars draws none here
    assert first["affinity"].shape == (4, 4) and first["prototypes"].shape == (8, 32)
    second, cached = load_or_compute_data_inputs(ship, config, vit, eval_loader(data, 32), path)
    assert cached and list(second) == list(first)
    np.testing.assert_array_equal(first["affinity"], second["affinity"])
    np.testing.assert_array_equal(first["prototypes"], second["prototypes"])
    # what the method computes is in the key: other settings or other inputs, another file
    assert len({path, cache(num_prototypes=4)[1], cache(num_prototypes=8, levels=[0, 2])[1]}) == 3
