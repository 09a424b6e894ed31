"""SPT: prompts of block i come from the frozen model's patch tokens entering block i."""
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader, TensorDataset

import shiplib

K = 4
N_IMAGES = 6


def tiny_vit(**kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, num_classes=0)
    cfg.update(kw)
    return VisionTransformer(**cfg)


@pytest.fixture(scope="module")
def images():
    return torch.randn(N_IMAGES, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def loader(images):
    return DataLoader(TensorDataset(images, torch.arange(N_IMAGES) % 3), batch_size=4)


def build(vit, data, **opts):
    opts.setdefault("num_prompts", K)
    return shiplib.build_model("spt", backbone=vit, num_classes=3, pretrained=False, data=data, **opts)


def block_input_patches(vit, images):
    """Patch tokens entering each block, via timm's forward_intermediates (block i input = block i-1 output)."""
    vit.eval()
    with torch.no_grad():
        x = vit.patch_embed(images)
        first = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))[:, vit.num_prefix_tokens:]
        outs = vit.forward_intermediates(images, indices=len(vit.blocks), output_fmt="NLC", intermediates_only=True)
    return [first] + list(outs[:-1])  # (B, N, D) each


def _rows_in(rows, tokens):
    """For each row, whether it equals (to float tolerance) one of the tokens."""
    d = torch.cdist(rows, tokens, compute_mode="donot_use_mm_for_euclid_dist")
    return d.min(dim=1).values < 1e-4


def test_without_data_it_fails_clearly():
    with pytest.raises(ValueError, match="pass data="):
        shiplib.build_model("spt", backbone=tiny_vit(), num_classes=3, pretrained=False)


def test_random_init_takes_tokens_of_the_matching_block_input(loader, images):
    vit = tiny_vit()
    ref = [t.reshape(-1, 32) for t in block_input_patches(vit, images)]
    m = build(vit, loader, init="random")
    for i in range(m.depth):
        assert _rows_in(m.prompts[i].detach(), ref[i]).all(), f"block {i} prompts are not block-{i} input tokens"
        for j in range(m.depth):
            if j != i:
                assert not _rows_in(m.prompts[i].detach(), ref[j]).any()
    assert len(set(map(tuple, m.prompts[0].detach().tolist()))) == K  # distinct tokens


def test_kmeans_prompts_are_centres_of_their_block_tokens(loader, images):
    vit = tiny_vit()
    ref = [t.reshape(-1, 32) for t in block_input_patches(vit, images)]
    m = build(vit, loader)  # default init="kmeans"; 96 tokens < max_tokens, so all are used
    assert m.config.init == "kmeans"
    for i in range(m.depth):
        centres = m.prompts[i].detach()
        assign = torch.cdist(ref[i], centres).argmin(dim=1)
        means = torch.stack([ref[i][assign == c].mean(0) for c in range(K)])
        assert torch.allclose(centres, means, atol=1e-4)
        rand = ref[i][torch.randperm(len(ref[i]), generator=torch.Generator().manual_seed(1))[:K]]
        inertia = lambda c: torch.cdist(ref[i], c).min(dim=1).values.pow(2).sum()  # noqa: E731
        assert inertia(centres) < inertia(rand)


def test_mean_pool_prompts_are_means_of_contiguous_patch_groups(loader, images):
    vit = tiny_vit()
    groups = [t.reshape(N_IMAGES, K, 16 // K, 32).mean(2).reshape(-1, 32) for t in block_input_patches(vit, images)]
    m = build(vit, loader, init="mean_pool")
    for i in range(m.depth):
        assert _rows_in(m.prompts[i].detach(), groups[i]).all()


def test_seeded_and_independent_of_drop_path_and_global_rng(loader):
    vit = tiny_vit()
    torch.manual_seed(1)
    a = build(vit, loader, init="random", seed=3, drop_path_rate=0.1).prompts.detach().clone()
    torch.manual_seed(2)  # extraction runs in eval mode: no drop-path noise from the global RNG
    m = build(vit, loader, init="random", seed=3, drop_path_rate=0.1)
    assert torch.equal(a, m.prompts)
    assert m.vit.training  # train mode restored after extraction
    assert not torch.equal(a, build(vit, loader, init="random", seed=4).prompts)


def test_token_subsampling_and_data_forms(images):
    vit = tiny_vit()
    ref = [t.reshape(-1, 32) for t in block_input_patches(vit, images)]
    for data in ([images[:3], images[3:]], images, DataLoader(TensorDataset(images), batch_size=5)):
        m = build(vit, data, init="random", max_tokens=K)
        assert all(_rows_in(m.prompts[i].detach(), ref[i]).all() for i in range(m.depth))


def test_token_pool_is_a_sample_without_replacement_at_the_same_positions_for_every_block(images):
    from shiplib.methods._prompt_init import sample_block_input_tokens

    vit = tiny_vit()
    ref = [t.reshape(-1, 32) for t in block_input_patches(vit, images)]  # 96 tokens per block
    m = build(vit, images, init="random")
    pools = sample_block_input_tokens(vit, [images[:2], images[2:3], images[3:]], K, "random", max_tokens=30, seed=0)
    assert [len(p) for p in pools] == [30] * m.depth
    pos = torch.cdist(pools[0], ref[0], compute_mode="donot_use_mm_for_euclid_dist").argmin(dim=1)
    assert len(set(pos.tolist())) == 30  # no token twice
    for i in range(m.depth):
        assert torch.allclose(pools[i], ref[i][pos], atol=1e-5)


def test_parameter_count_is_depth_k_d(loader):
    c = shiplib.count_parameters(build(tiny_vit(depth=3), loader, init="random"))
    assert c["trainable_without_head"] == 3 * K * 32


def test_bad_inputs_fail_clearly(loader, images):
    with pytest.raises(ValueError, match="init must be one of kmeans, random, mean_pool"):
        build(tiny_vit(), loader, init="kmedoids")
    with pytest.raises(ValueError, match="max_tokens"):
        build(tiny_vit(), loader, max_tokens=K - 1)
    with pytest.raises(ValueError, match="no images"):
        build(tiny_vit(), [])
    with pytest.raises(ValueError, match="only 16 candidate tokens"):
        build(tiny_vit(), images[:1], num_prompts=20)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        build(tiny_vit(), [torch.randn(3, 32, 32)])
