"""Turn a backbone spec into a timm `VisionTransformer`.

A spec is a timm model name, a local file (Google `.npz`, `.safetensors`, `.pth`/`.pt`), the string
"mini" (the default committed mini backbone; `MINI_CHECKPOINTS` names the others) or an already built module.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import socket
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn as nn
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from timm.layers import DropPath
from timm.models.vision_transformer import VisionTransformer, _load_weights

from ..errors import ConfigError, env_flag
from ..utils.paths import ProjectRootError
from .mini import MINI_CHECKPOINTS, create_mini_vit, mini_checkpoint_path, mini_recipe

DEFAULT_BACKBONE = "vit_base_patch16_224.orig_in21k"
GOOGLE_NPZ_URL = "https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz"
STATE_DICT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class BackboneError(ConfigError):
    """A backbone spec that cannot be turned into a ViT; the message says how to fix it (exit 2, like any setting
    that cannot work as given)."""


def set_drop_path(vit: VisionTransformer, rate: float) -> None:
    """Stochastic depth linspace(0, rate, depth) over the blocks, as timm builds it."""
    rates = torch.linspace(0, rate, len(vit.blocks)).tolist()
    for blk, r in zip(vit.blocks, rates):
        for name in ("drop_path1", "drop_path2"):
            if hasattr(blk, name):
                setattr(blk, name, DropPath(r) if r > 0 else nn.Identity())


def npz_architecture(path: str | os.PathLike) -> dict:
    """Read depth, width, heads, patch and image size from a Google ViT `.npz` (no hard-coded ViT-B)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise BackboneError(f"{path} is not a readable .npz archive ({e}); expected Google's ViT .npz") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise BackboneError(f"{path} holds a single array, not a Google ViT .npz archive of named weights")
    with archive as w:
        keys = set(w.files)
        prefix = next((p for p in ("", "opt/target/", "params/") if f"{p}embedding/kernel" in keys), None)
        if prefix is None:
            raise BackboneError(f"{path} is not a Google ViT .npz: no 'embedding/kernel' entry")
        if f"{prefix}Transformer/encoderblock_0/LayerNorm_0/scale" not in keys:
            raise BackboneError(f"{path} is not in the original Google ViT layout (no 'Transformer/encoderblock_0'); "
                                "big_vision checkpoints (stacked 'encoderblock', 'params/' prefix) are not supported. "
                                "Load it with timm and pass the model, or convert it to .safetensors.")
        kernel = w[f"{prefix}embedding/kernel"]  # (p, p, C, D)
        blocks = f"{prefix}Transformer/encoderblock_"
        depth = len({k[len(blocks):].split("/")[0] for k in keys if k.startswith(blocks)})
        q = w[f"{prefix}Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"]  # (D, H, hd)
        pos = w[f"{prefix}Transformer/posembed_input/pos_embedding"]  # (1, N, D)
        mlp = w[f"{prefix}Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"]  # (D, hidden)
        has_cls = f"{prefix}cls" in keys
    grid = int(math.isqrt(pos.shape[1] - int(has_cls)))
    return dict(patch_size=int(kernel.shape[0]), in_chans=int(kernel.shape[2]), embed_dim=int(kernel.shape[3]),
                depth=depth, num_heads=int(q.shape[1]), mlp_ratio=mlp.shape[1] / kernel.shape[3],
                img_size=grid * int(kernel.shape[0]), class_token=has_cls, qkv_bias=True)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict safely: safetensors, or torch.load(weights_only=True); unwraps {'model': ...}."""
    return _load_state_dict_and_architecture(Path(path))[0]


def _load_state_dict_and_architecture(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The state dict and the architecture the file itself declares: a safetensors metadata entry 'architecture'
    (a JSON object) or 'num_heads', or an 'architecture' dict next to the weights in a wrapped .pth."""
    declared = None
    if path.suffix == ".safetensors":
        try:
            sd = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                declared = _metadata_architecture(path, f.metadata() or {})
        except (SafetensorError, OSError) as e:  # a text file, a truncated download, an unreadable file
            raise _unreadable_safetensors(path, e) from e
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "weights only" not in str(e).lower():
                raise _unreadable_torch_file(path, e) from e
            raise BackboneError(f"backbone file {path} holds pickled Python objects (e.g. a whole model), which "
                                "torch.load(weights_only=True) does not run. Re-save it as a plain state dict "
                                "(torch.save(model.state_dict(), ...)) or as .safetensors.") from e
        except Exception as e:  # truncated zip, not a torch file: torch raises RuntimeError, KeyError, EOFError…
            raise _unreadable_torch_file(path, e) from e
        if isinstance(sd, dict) and isinstance(sd.get("architecture"), dict):
            declared = sd["architecture"]
        for key in ("model", "state_dict", "module"):
            if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BackboneError(f"{path} does not hold a state dict of tensors")
    return sd, declared


def _metadata_architecture(path: Path, metadata: dict) -> dict | None:
    if "architecture" in metadata:
        try:
            arch = json.loads(metadata["architecture"])
        except ValueError:
            arch = None
        if not isinstance(arch, dict):
            raise BackboneError(f"the 'architecture' metadata of {path} is not a JSON object: "
                                f"{metadata['architecture'][:80]!r}; fix the file or pass backbone_arch")
        return arch
    if "num_heads" in metadata:
        return {"num_heads": _heads(metadata["num_heads"], f"the 'num_heads' metadata of {path}")}
    return None


def _heads(value, where: str) -> int:
    try:
        heads = int(value)
    except (TypeError, ValueError):
        heads = 0
    if heads < 1 or str(value).strip() != str(heads):
        raise BackboneError(f"{where} is {value!r}, not a positive whole number of attention heads")
    return heads


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else 'no detail'}"


def _unreadable_safetensors(path: Path, e: BaseException) -> BackboneError:
    return BackboneError(f"backbone file {path} is not a readable safetensors file ({_first_line(e)}); expected "
                         "tensors saved with safetensors (a truncated download or copy? fetch it again), or pass a "
                         ".npz/.pth file or a timm name as backbone")


def _unreadable_torch_file(path: Path, e: BaseException) -> BackboneError:
    return BackboneError(f"backbone file {path} is not a readable PyTorch file ({_first_line(e)}); expected a state "
                         "dict written by torch.save (a truncated download or copy? fetch it again), or pass a "
                         ".safetensors/.npz file or a timm name as backbone")


def state_dict_architecture(sd: dict[str, torch.Tensor], num_heads: int | None = None) -> dict:
    """The ViT architecture that timm-style state-dict shapes and keys determine. The number of attention heads
    cannot be read from shapes: it is included only when given."""
    try:
        proj = sd["patch_embed.proj.weight"]  # (D, C, p, p)
        pos = sd["pos_embed"]
    except KeyError as e:
        raise BackboneError(f"state dict has no {e.args[0]!r}: not a timm VisionTransformer state dict. "
                            "Official SHIP checkpoints go through shiplib.compat.convert_official_state_dict.") from e
    dim, chans, p = proj.shape[0], proj.shape[1], proj.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    prefix = int("cls_token" in sd) + (sd["reg_token"].shape[1] if "reg_token" in sd else 0)
    grid = int(math.isqrt(pos.shape[1] - prefix))
    hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
    arch = dict(patch_size=p, in_chans=chans, embed_dim=dim, depth=depth, mlp_ratio=hidden / dim,
                img_size=grid * p, class_token="cls_token" in sd,
                reg_tokens=sd["reg_token"].shape[1] if "reg_token" in sd else 0,
                qkv_bias="blocks.0.attn.qkv.bias" in sd, qk_norm="blocks.0.attn.q_norm.weight" in sd,
                pre_norm="norm_pre.weight" in sd)
    if "blocks.0.ls1.gamma" in sd:
        arch["init_values"] = 1e-5  # layer scale present; its values are loaded from the file
    return arch if num_heads is None else {**arch, "num_heads": num_heads}


def architecture_of(vit: VisionTransformer) -> dict:
    """The whole architecture of a built ViT, as a result records it."""
    attn, mlp = vit.blocks[0].attn, vit.blocks[0].mlp
    return dict(patch_size=int(vit.patch_embed.patch_size[0]), in_chans=int(vit.patch_embed.proj.in_channels),
                embed_dim=int(vit.embed_dim), depth=len(vit.blocks), num_heads=int(attn.num_heads),
                mlp_ratio=mlp.fc1.out_features / vit.embed_dim,
                img_size=list(getattr(vit.patch_embed, "img_size", ()) or ()),
                class_token=vit.cls_token is not None, reg_tokens=int(getattr(vit, "num_reg_tokens", 0)),
                qkv_bias=attn.qkv.bias is not None, qk_norm=not isinstance(attn.q_norm, nn.Identity),
                pre_norm=not isinstance(vit.norm_pre, nn.Identity), layer_scale=hasattr(vit.blocks[0].ls1, "gamma"),
                global_pool=vit.global_pool)


def _sidecar_architecture(path: Path) -> dict | None:
    card = path.with_suffix(".json")
    if card.is_file():
        try:
            arch = json.loads(card.read_text(encoding="utf-8")).get("architecture")
        except (OSError, ValueError, AttributeError) as e:
            raise BackboneError(f"{card}, the card next to the backbone file {path.name}, cannot be read ({e}); "
                                "expected a JSON object with an 'architecture' entry. Fix or delete it.") from e
        if isinstance(arch, dict):
            return {k: v for k, v in arch.items() if k not in ("timm_class", "num_classes")}
    return None


def _file_architecture(path: Path, sd: dict, given: dict | None) -> dict:
    """Shapes give width, depth, patch and image size; the head count comes from `given` (backbone_arch, the file's
    metadata or its card), which also wins for anything else it names. Nothing is guessed."""
    arch = {**state_dict_architecture(sd), **(given or {})}
    if "num_heads" not in arch:
        raise BackboneError(
            f"{path} does not say how many attention heads its ViT has (width {arch['embed_dim']}), and shapes cannot "
            f"tell: pass it, e.g. --set backbone_arch='{{\"num_heads\": N}}' (or a timm model name), or put the card "
            f"{path.with_suffix('.json').name} ({{\"architecture\": {{\"num_heads\": N}}}}) next to the file")
    heads = _heads(arch["num_heads"], f"num_heads of {path}")
    if arch["embed_dim"] % heads:
        raise BackboneError(f"num_heads={heads} for {path} does not divide its width {arch['embed_dim']}; "
                            "give the head count the backbone was trained with (backbone_arch)")
    return {**arch, "num_heads": heads}


def _is_file_spec(backbone: Any) -> bool:
    text = str(backbone)
    return isinstance(backbone, os.PathLike) or (isinstance(backbone, str) and (
        os.sep in text or text.endswith((".npz", *STATE_DICT_SUFFIXES))))


def check_backbone_file(backbone: Any, backbone_arch: Any = None) -> None:
    """Cheap checks of a backbone given as a file, made before any work: the file exists, and a .safetensors
    file's header parses and, with its card or `backbone_arch`, says the architecture (the weights themselves are
    read when the backbone is built)."""
    if isinstance(backbone, nn.Module) or not _is_file_spec(backbone):
        return
    path = Path(backbone)
    if not path.is_file():
        raise BackboneError(f"backbone file {path} does not exist; give an existing .npz, .safetensors or .pth "
                            "file, a timm model name or 'mini'")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                declared = _metadata_architecture(path, f.metadata() or {})
                shapes = {k: _Shape(f.get_slice(k).get_shape()) for k in f.keys()}
        except (SafetensorError, OSError) as e:
            raise _unreadable_safetensors(path, e) from e
        if not isinstance(backbone_arch, str):
            _file_architecture(path, shapes, backbone_arch or declared or _sidecar_architecture(path))


class _Shape:
    """A tensor's shape without its values, for reading an architecture from a file header."""

    def __init__(self, shape):
        self.shape = tuple(shape)


def _from_file(path: Path, arch: Any, **kw) -> VisionTransformer:
    check_backbone_file(path, arch)
    if path.suffix == ".npz":
        vit = VisionTransformer(**{**npz_architecture(path), "num_classes": 0, **kw})
        _load_weights(vit, str(path))
        return vit
    if path.suffix not in STATE_DICT_SUFFIXES:
        raise BackboneError(f"unsupported backbone file {path.name}: use .npz (Google ViT), "
                            f"{', '.join(STATE_DICT_SUFFIXES)} (timm state dict)")
    sd, declared = _load_state_dict_and_architecture(path)
    if isinstance(arch, str):
        vit = timm.create_model(arch, pretrained=False, num_classes=0, **kw)
    else:
        vit = VisionTransformer(**{**_file_architecture(path, sd, arch or declared or _sidecar_architecture(path)),
                                   "num_classes": 0, **kw})
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    own = vit.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
             for k, v in sd.items() if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected or wrong:
        raise BackboneError(f"{path} does not match the architecture: missing {missing[:5]}, unexpected "
                            f"{unexpected[:5]}, shape (file vs model) {wrong[:3]}. "
                            "Pass backbone_arch= (a timm name or a dict of VisionTransformer args).")
    vit.load_state_dict(sd)
    return vit


def _cached_weights(name: str) -> str | None:
    """Path of the timm weights for `name` if they are already in the local Hugging Face cache."""
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, fname)
        if isinstance(found, str):
            return found
    return None


def weights_file(backbone: Any) -> Path | None:
    """The local file a backbone spec's pretrained weights are read from ('mini', a path, a cached timm name)."""
    if isinstance(backbone, nn.Module):
        return None
    text = str(backbone)
    if text in MINI_CHECKPOINTS:
        try:
            return mini_checkpoint_path(name=text)
        except ProjectRootError:  # create_backbone says where it looked
            return None
    if _is_file_spec(backbone):
        return Path(text)
    try:
        cached = _cached_weights(text)
    except Exception:  # an unknown name: create_backbone reports it properly
        return None
    return Path(cached) if cached else None


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if env_flag("HF_HUB_OFFLINE"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_timm(name: str, pretrained: bool, **kw) -> VisionTransformer:
    if name not in timm.list_models(pretrained=False) and name.split(".")[0] not in timm.list_models():
        raise BackboneError(f"unknown backbone {name!r}: give a timm ViT name (e.g. {DEFAULT_BACKBONE}), "
                            "'mini', or a path to a .npz/.safetensors/.pth file")
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=0, **kw)
    cached = _cached_weights(name)
    if cached is not None:  # no network needed: point timm at the cached file
        return timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=cached), **kw)
    hint = (f"Either fetch them once on a machine with internet (`python -c \"import timm; "
            f"timm.create_model('{name}', pretrained=True)\"` fills the Hugging Face cache, then copy "
            f"~/.cache/huggingface), or download Google's original in21k ViT-B/16 ({GOOGLE_NPZ_URL}) and pass "
            f"backbone='path/to/ViT-B_16.npz'. For a CPU-only try, use backbone='mini'.")
    if not _hub_reachable():
        raise BackboneError(f"pretrained weights for {name!r} are not in the local cache and the Hugging Face hub "
                            f"cannot be reached. {hint}")
    try:
        return timm.create_model(name, pretrained=True, num_classes=0, **kw)
    except Exception as e:
        raise BackboneError(f"could not load pretrained weights for {name!r} ({type(e).__name__}: {e}). {hint}") from e


def create_backbone(
    backbone: Any = DEFAULT_BACKBONE,
    pretrained: bool = True,
    drop_path_rate: float = 0.0,
    backbone_arch: Any = None,
    **timm_kwargs,
) -> VisionTransformer:
    """Build the frozen-to-be ViT. Returns a timm `VisionTransformer` with `num_classes=0` (heads come later).

    `pretrained=False` gives random weights of the same architecture (tests, or training from scratch).
    """
    if isinstance(backbone, nn.Module):
        if not isinstance(backbone, VisionTransformer):
            raise BackboneError(f"backbone module must be a timm VisionTransformer, got {type(backbone).__name__}")
        vit = backbone
    elif isinstance(backbone, str) and backbone in MINI_CHECKPOINTS:
        vit = create_mini_vit(num_classes=0)
        if pretrained:
            try:
                ckpt = mini_checkpoint_path(name=backbone)
            except ProjectRootError as e:
                raise BackboneError(f"the mini backbone's weights live in <project>/data/checkpoints, but {e}") from e
            if not ckpt.is_file():
                raise BackboneError(f"the {backbone!r} backbone's checkpoint {ckpt} is missing: train it with "
                                    f"{mini_recipe(backbone)}, or pass pretrained=False")
            sd = {k: v for k, v in load_state_dict_file(ckpt).items() if not k.startswith("head.")}
            vit.load_state_dict(sd)
    elif _is_file_spec(backbone):
        vit = _from_file(Path(backbone), backbone_arch, **timm_kwargs)
        if not pretrained:
            vit.init_weights()
    elif isinstance(backbone, str):
        vit = _from_timm(backbone, pretrained, **timm_kwargs)
    else:
        raise BackboneError(f"backbone must be a timm name, a file path, a mini name ({', '.join(MINI_CHECKPOINTS)}) "
                            f"or a VisionTransformer; got {backbone!r}")
    if not isinstance(vit, VisionTransformer):
        raise BackboneError(f"{backbone!r} is a {type(vit).__name__}, not a timm VisionTransformer")
    vit.reset_classifier(0)
    if pretrained:
        _check_finite_weights(vit, backbone)
    set_drop_path(vit, drop_path_rate)
    return vit


@torch.no_grad()
def _check_finite_weights(vit: VisionTransformer, backbone: Any) -> None:
    """Pretrained weights with NaN/inf would make every loss NaN, which looks like a learning-rate problem."""
    for name, t in vit.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise BackboneError(f"the backbone {str(backbone)!r} has non-finite weights: {bad} of {t.numel()} values "
                                f"of {name} are NaN or inf. The file is damaged: fetch or export it again")
