"""Distillation pretraining of the mini backbone: views, teacher, cache, resumable training, export."""
import json

import numpy as np
import pytest
import torch

from shiplib.backbones.distill_cache import CacheSpec, build_cache, chunk_path, load_cache
from shiplib.backbones.distill_mini import DistillConfig, distill_mini, export_distilled
from shiplib.backbones.pretrain_images import PHOTOS, ViewSampler, box_downsample, fractal_view
from shiplib.backbones.teacher import load_teacher, teacher_targets
from shiplib.utils.io import sha256_file

#: skimage photographs that mini-VTAB crops: pretraining must not see them.
MINI_VTAB_PHOTOS = {"brick", "grass", "gravel", "hubble_deep_field", "coins", "coffee", "chelsea",
                    "immunohistochemistry", "ihc"}


def test_no_mini_vtab_source_among_the_photos():
    loaders = {v[0].rsplit(".", 1)[-1].rsplit("/", 1)[-1].split(".")[0] for v in PHOTOS.values()}
    assert not loaders & MINI_VTAB_PHOTOS
    assert not set(PHOTOS) & MINI_VTAB_PHOTOS


def test_views_are_deterministic_and_consistent():
    sampler = ViewSampler(size=64)
    a, b, c = sampler.sample(24, seed=3), sampler.sample(24, seed=3), sampler.sample(24, seed=4)
    assert np.array_equal(a.teacher, b.teacher) and not np.array_equal(a.teacher, c.teacher)
    assert a.teacher.shape == (24, 64, 64, 3) and a.student.shape == (24, 32, 32, 3)
    assert np.array_equal(a.student, box_downsample(a.teacher, 32))  # the student sees the teacher's view
    assert set(a.source) <= {"photo", "fmnist", "fractal"}
    with pytest.raises(ValueError, match="unknown view sources"):
        ViewSampler(weights={"mnist": 1.0})


def test_fractals_are_not_blank():
    img = fractal_view(np.random.default_rng(0), 64)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) >= 3


def test_teacher_is_the_real_imagenet_network():
    import skimage.data
    from PIL import Image

    cat = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((224, 224)))[None]
    out = teacher_targets(load_teacher(), cat)
    assert int(out["logits"].float().argmax()) == 285  # ImageNet "Egyptian cat"
    small = teacher_targets(load_teacher(), np.zeros((2, 128, 128, 3), np.uint8))
    assert small["pooled"].shape == (2, 1280) and small["spatial"].shape == (2, 112, 8, 8)


def test_cache_is_reused_by_chunk(tmp_path):
    spec = CacheSpec(views=80, teacher_size=64)
    paths = build_cache(tmp_path, spec, threads=1)
    assert paths == [chunk_path(tmp_path, spec, 0)]
    stamp = paths[0].stat().st_mtime_ns
    assert build_cache(tmp_path, spec)[0].stat().st_mtime_ns == stamp  # nothing recomputed
    cache = load_cache(paths)
    assert cache["student"].shape == (80, 32, 32, 3) and cache["spatial"].shape == (80, 112, 4, 4)


def test_training_resumes_to_the_same_weights_and_exports_a_card(tmp_path):
    cfg = DistillConfig(views=96, epochs=2, batch_size=32, threads=1)
    spec_size = dict(cache_dir=tmp_path / "cache")
    full, hist_full, _ = distill_mini(cfg, work_dir=tmp_path / "a", **spec_size)
    distill_mini(cfg, work_dir=tmp_path / "b", stop_after=1, **spec_size)
    resumed, hist_resumed, elapsed = distill_mini(cfg, work_dir=tmp_path / "b", **spec_size)
    for (k, v), w in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, w), k
    assert [h["loss_pooled"] for h in hist_full] == [h["loss_pooled"] for h in hist_resumed]
    with pytest.raises(ValueError, match="another recipe"):
        distill_mini(DistillConfig(views=96, epochs=2, batch_size=32, lr=0.5), work_dir=tmp_path / "b", **spec_size)
    card = export_distilled(resumed, cfg, hist_resumed, elapsed, tmp_path / "v.safetensors", tmp_path / "v.json")
    assert card["complete"] and card["sha256"] == sha256_file(tmp_path / "v.safetensors")
    assert json.loads((tmp_path / "v.json").read_text())["architecture"]["depth"] == 12


@pytest.mark.parametrize("kw, match", [(dict(w_pooled=0, w_spatial=0, w_pixel=0), "not all 0"),
                                       (dict(w_pixel=-1), ">= 0"), (dict(views=8), "views >= batch_size")])
def test_bad_recipes_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        DistillConfig(**kw)
