"""Decoupled attention (docs/ship_computation.md §6) and the joint-softmax block against plain references."""
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block, VisionTransformer

from shiplib.layers import check_block, decoupled_attention, decoupled_block_forward, joint_block_forward

D, HEADS = 32, 2


def make_block(seed=0, **kw):
    torch.manual_seed(seed)
    blk = Block(D, HEADS, mlp_ratio=2.0, qkv_bias=True, **kw).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for m in blk.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
    return blk


def reference_da_block(blk, x, n, s, prompts_attend):
    """Spec §6 by hand: per head, explicit q, k, v from the fused weight (rows q | k | v), two softmaxes."""
    d = D // HEADS
    xn = F.layer_norm(x, (D,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
    W, b = blk.attn.qkv.weight, blk.attn.qkv.bias
    heads_out, heads_logits = [], []
    for h in range(HEADS):
        rows = slice(h * d, (h + 1) * d)
        q = xn @ W[:D][rows].T + b[:D][rows]
        k = xn @ W[D:2 * D][rows].T + b[D:2 * D][rows]
        v = xn @ W[2 * D:][rows].T + b[2 * D:][rows]
        queries = q if prompts_attend else q[:, :n]
        lg = queries @ k.transpose(1, 2) / math.sqrt(d)
        z = (1 - s) * torch.softmax(lg[:, :n, :n], -1) @ v[:, :n] + s * torch.softmax(lg[:, :n, n:], -1) @ v[:, n:]
        p = torch.softmax(lg[:, n:], -1) @ v if prompts_attend else xn[:, n:, rows]
        heads_out.append(torch.cat([z, p], 1))
        heads_logits.append(lg)
    out = torch.cat(heads_out, -1) @ blk.attn.proj.weight.T + blk.attn.proj.bias
    x = x + out
    y = F.layer_norm(x, (D,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
    y = F.gelu(y @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias) @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
    return x + y, torch.stack(heads_logits, 1)


@pytest.mark.parametrize("prompts_attend", [False, True])
@pytest.mark.parametrize("s", [0.1, 0.5])
def test_decoupled_block_equals_two_softmax_reference(prompts_attend, s):
    blk = make_block()
    n, P = 9, 5
    x = torch.randn(3, n + P, D)
    out, logits = decoupled_block_forward(blk, x, n, scale=s, prompts_attend=prompts_attend)
    ref_out, ref_logits = reference_da_block(blk, x, n, s, prompts_attend)
    assert logits.shape == (3, HEADS, n + P if prompts_attend else n, n + P)
    assert (out - ref_out).abs().max() < 1e-5
    assert (logits - ref_logits).abs().max() < 1e-5


def test_prompt_rows_are_identity_then_proj_and_mlp_when_prompts_do_not_attend():
    blk = make_block()
    n, P = 9, 4
    x = torch.randn(2, n + P, D)
    out, _ = decoupled_block_forward(blk, x, n, prompts_attend=False)
    p = x[:, n:]
    p = p + blk.attn.proj(blk.norm1(p))
    p = p + blk.mlp(blk.norm2(p))
    assert (out[:, n:] - p).abs().max() < 1e-5
    # ... and they depend only on themselves: changing the image changes no prompt row
    x2 = x.clone()
    x2[:, :n] = torch.randn(2, n, D)
    assert torch.allclose(decoupled_block_forward(blk, x2, n)[0][:, n:], out[:, n:], atol=1e-6)


def test_scale_zero_leaves_the_image_tokens_exactly_as_without_prompts():
    blk = make_block()
    n = 9
    x = torch.randn(2, n + 6, D)
    out, _ = decoupled_block_forward(blk, x, n, scale=0.0)
    assert (out[:, :n] - blk(x[:, :n])).abs().max() < 1e-5


def test_without_prompts_da_is_the_plain_block():
    blk = make_block()
    x = torch.randn(2, 9, D)
    out, logits = decoupled_block_forward(blk, x, 9, scale=0.1)
    assert (out - blk(x)).abs().max() < 1e-5
    assert logits.shape == (2, HEADS, 9, 9)


@pytest.mark.parametrize("kw", [{}, dict(qk_norm=True), dict(init_values=0.1), dict(scale_attn_norm=True)])
def test_joint_block_forward_equals_the_timm_block(kw):
    blk = make_block(**kw)
    x = torch.randn(2, 13, D)
    out, logits = joint_block_forward(blk, x)
    assert (out - blk(x)).abs().max() < 1e-5
    assert logits.shape == (2, HEADS, 13, 13)


def test_joint_logits_are_the_full_pre_softmax_square():
    blk = make_block()
    x = torch.randn(2, 13, D)
    q, k, _ = (F.layer_norm(x, (D,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps) @ blk.attn.qkv.weight.T
               + blk.attn.qkv.bias).split(D, dim=-1)
    d = D // HEADS
    ref = torch.stack([q[..., h * d:(h + 1) * d] @ k[..., h * d:(h + 1) * d].transpose(1, 2) / math.sqrt(d)
                       for h in range(HEADS)], 1)
    assert (joint_block_forward(blk, x)[1] - ref).abs().max() < 1e-5


def test_da_uses_q_and_k_norms_of_the_block():
    blk = make_block(qk_norm=True)
    x = torch.randn(2, 9, D)
    assert (decoupled_block_forward(blk, x, 9)[0] - blk(x)).abs().max() < 1e-5


def test_drop_path_is_the_blocks_own_and_covers_prompt_rows():
    blk = make_block(drop_path=0.9).train()
    torch.manual_seed(3)
    x = torch.randn(16, 12, D)
    out, _ = decoupled_block_forward(blk, x, 8)
    unchanged = (out - x).abs().amax(dim=(1, 2)) == 0  # both residual branches dropped for these samples
    assert unchanged.any() and not unchanged.all()


def test_bad_inputs_fail_clearly():
    blk = make_block()
    with pytest.raises(ValueError, match="num_image_tokens"):
        decoupled_attention(blk.attn, torch.randn(1, 5, D), 6)
    with pytest.raises(TypeError, match="not a standard timm ViT Block"):
        check_block(torch.nn.Linear(3, 3))
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=D, depth=1, num_heads=HEADS, num_classes=0)
    check_block(vit.blocks[0])
