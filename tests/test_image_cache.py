"""The decoded-image cache yields exactly the uncached tensors (in memory and memory-mapped, both presets), is
keyed on the file list, preset and size, is reused from disk, and normalises whole batches as the transform does."""
import os

import pytest
import torch

from conftest import write_tiny_task
from shiplib.data import build_dataset
from shiplib.data.image_cache import DecodedImages, cache_key


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_data")
    write_tiny_task(root, "svhn", sizes=dict(train800=12, val200=2, test=6), size=37)  # odd: every resize resamples
    return root


def _items(ds):
    return [ds[i] for i in range(len(ds))]


@pytest.mark.parametrize("preset", ["ship", "vpt"])
@pytest.mark.parametrize("img_size", [24, 48])
@pytest.mark.parametrize("where", ["memory", "file"])
def test_cached_items_are_the_uncached_tensors(root, tmp_path, preset, img_size, where):
    plain = build_dataset("svhn", "train800", root=root, preset=preset, img_size=img_size)
    cached = build_dataset("svhn", "train800", root=root, preset=preset, img_size=img_size)
    assert cached.attach_cache(preset, img_size, tmp_path, memory_bytes=0 if where == "file" else 2 ** 30)
    assert (cached.decoded.where == "memory") == (where == "memory")
    for (a, la), (b, lb) in zip(_items(plain), _items(cached)):
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b) and la == lb


def test_normalising_a_uint8_batch_gives_the_items(root):
    ds = build_dataset("svhn", "test", root=root, img_size=32, cache=True)
    floats = torch.stack([x for x, _ in _items(ds)])
    ds.uint8 = True
    batch = torch.stack([x for x, _ in _items(ds)])
    assert batch.dtype == torch.uint8 and torch.equal(ds.normalize(batch), floats)


def test_a_memory_mapped_cache_is_reused_and_keyed_on_files_preset_and_size(root, tmp_path):
    ds = build_dataset("svhn", "test", root=root, img_size=32)
    assert ds.attach_cache("ship", 32, tmp_path, memory_bytes=0)
    files = sorted(tmp_path.glob("*.u8"))
    assert len(files) == 1 and files[0].stem == cache_key([p for p, _ in ds.samples], "ship", 32)

    def must_not_decode(i):
        raise AssertionError("a cache on disk must be reused, not rebuilt")

    again = DecodedImages.build(len(ds), must_not_decode, 32, files[0].stem, tmp_path, memory_bytes=0)
    assert torch.equal(again[0], ds.decoded[0])
    paths = [p for p, _ in ds.samples]
    keys = {cache_key(paths, "ship", 32), cache_key(paths, "vpt", 32), cache_key(paths, "ship", 24),
            cache_key(paths[:-1], "ship", 32)}
    st = paths[0].stat()
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))  # an edited image
    keys.add(cache_key(paths, "ship", 32))
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert len(keys) == 5


def test_a_split_that_fits_nowhere_is_read_uncached(root):
    ds = build_dataset("svhn", "test", root=root, img_size=32)
    assert not ds.attach_cache("ship", 32, folder=None, memory_bytes=0)
    assert ds.decoded is None and ds[0][0].shape == (3, 32, 32)


def test_batches_normalised_on_the_device_are_the_loader_batches(root):
    from shiplib.engine.prepare import DeviceBatches, eval_loader, on_device

    ds = build_dataset("svhn", "train800", root=root, img_size=32, cache=True)
    floats = list(eval_loader(ds, 5))
    assert on_device(eval_loader(ds, 5), torch.device("cpu")).__class__.__name__ == "DataLoader"  # floats: as is
    ds.uint8 = True
    batches = on_device(eval_loader(ds, 5), torch.device("cpu"))
    assert isinstance(batches, DeviceBatches) and len(batches) == len(floats) == 3
    for (a, ya), (b, yb) in zip(floats, batches):
        assert torch.equal(a, b) and torch.equal(ya, yb)
