"""Which weights a backbone holds: a hash of its tensors, and that hash for the pretrained backbone a run names
(memoised per weights-file state, so a replaced checkpoint is noticed)."""
from __future__ import annotations

import hashlib
import json

import torch

from . import create_backbone
from .loading import weights_file


def backbone_fingerprint(vit: torch.nn.Module) -> str:
    """sha256 over the backbone's tensors (names, shapes, dtypes, values), head excluded: identifies its weights."""
    h = hashlib.sha256()
    for name, t in vit.state_dict().items():
        if name.startswith("head."):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


_FINGERPRINTS: dict = {}


def _file_state(spec) -> tuple | None:
    """(path, mtime, size) of the weights file a backbone spec reads, so a replaced checkpoint is noticed."""
    path = weights_file(spec)
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return str(path), st.st_mtime_ns, st.st_size


def current_fingerprint(spec, pretrained: bool = True, arch=None) -> str | None:
    """`backbone_fingerprint` of the pretrained backbone a config names (memoised per weights file state).

    None for random-init backbones, whose weights depend on the run's seed, not on a file.
    """
    if not pretrained:
        return None
    key = (str(spec), _file_state(spec), json.dumps(arch, sort_keys=True))
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = backbone_fingerprint(create_backbone(spec, pretrained=True, backbone_arch=arch))
    return _FINGERPRINTS[key]
