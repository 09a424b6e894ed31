"""The 19 VTAB-1k tasks: names, aliases, class counts, TFDS sources, split rules and label rules.

This registry is VTAB-1k only. Lookup is case-insensitive, so SHIP's upper-case `CIFAR100` (which in SHIP's
own code means the full torchvision CIFAR-100) resolves here to the VTAB-1k task `cifar100`; full CIFAR-100 is
not a task of this registry.

Where the facts come from (facts only, no code copied):
- split rules, label derivations, TFDS builder names and version patterns: google-research/task_adaptation
  `task_adaptation/data/*.py` (identical copies in KMnP/vpt and ZhangYuanhan-AI/NOAH, except KITTI, which VPT
  and NOAH pin to `kitti:3.2.0`; SHIP reads NOAH's converted folders, so 3.2.0 is used here);
- canonical folder names: NOAH's `get_vtab1k.py` output renamed as SHIP's/NOAH's `lib/datasets.py` read it;
- aliases: NOAH `get_vtab1k.py` folders, PETL_Vision `utils/global_var.py`, SPT `Dataset/VTAB.py`
  (WangYZ1608/Self-Prompt-Tuning), VPT `src/data/datasets/tf_dataset.py` `DATA.NAME` strings;
- class counts: SHIP `lib/datasets.py`; test sizes: TFDS catalog, cross-checked against SHIP's logged accuracies;
- TFDS versions VPT used: VPT `VTAB_SETUP.md`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .tasks import TaskSpec, register_task

TRAIN_SIZE, VAL_SIZE = 800, 200

Segment = tuple[str, int, int]  # (TFDS split, start, stop): the examples split[start:stop] in record order


@dataclass(frozen=True)
class SplitRule:
    """Where a VTAB-1k task takes its four splits from.

    train800 is always the first examples of TFDS `train`. val200 starts at `val_start_pct` percent of
    `val_split` and test runs from `test_start_pct` percent of `test_split` to its end. Percent points are
    turned into indices with integer floor arithmetic, as task_adaptation computes its split counts.
    """

    val_split: str
    val_start_pct: int
    test_split: str
    test_start_pct: int = 0

    def segments(self, source_sizes: Mapping[str, int], train_size: int = TRAIN_SIZE,
                 val_size: int = VAL_SIZE) -> dict[str, list[Segment]]:
        """The index ranges of every split, given the sizes of the TFDS source splits.

        `train_size`/`val_size` are 800/200 for VTAB-1k; smaller values exist only for tests on mock data.
        """
        for split in {"train", self.val_split, self.test_split}:
            if split not in source_sizes:
                raise ValueError(f"size of TFDS split {split!r} is needed; got sizes for {sorted(source_sizes)}")
        val_start = self.val_start_pct * source_sizes[self.val_split] // 100
        test_start = self.test_start_pct * source_sizes[self.test_split] // 100
        train = [("train", 0, train_size)]
        val = [(self.val_split, val_start, val_start + val_size)]
        test = [(self.test_split, test_start, source_sizes[self.test_split])]
        # The blocks must be disjoint and inside their source split, or the task would leak test data.
        blocks = sorted([train[0], val[0], test[0]])
        for (s1, a1, b1), (s2, a2, b2) in zip(blocks, blocks[1:]):
            if s1 == s2 and b1 > a2:
                raise ValueError(f"split blocks overlap: {s1}[{a1}:{b1}] and {s2}[{a2}:{b2}] "
                                 f"(source sizes {dict(source_sizes)}, train_size={train_size}, val_size={val_size})")
        for s, a, b in blocks:
            if not 0 <= a < b <= source_sizes[s]:
                raise ValueError(f"slice {s}[{a}:{b}] does not fit in TFDS split {s!r} of {source_sizes[s]} examples")
        return {"train800": train, "val200": val, "train800val200": train + val, "test": test}

    def slice_strings(self, source_sizes: Mapping[str, int], **sizes) -> dict[str, str]:
        """The splits in TFDS slicing notation, e.g. `train[:800]+train[65931:66131]`."""
        return {name: "+".join(_format_segment(seg, source_sizes) for seg in segs)
                for name, segs in self.segments(source_sizes, **sizes).items()}


def _format_segment(seg: Segment, source_sizes: Mapping[str, int]) -> str:
    split, start, stop = seg
    to_end = stop == source_sizes[split]
    if start == 0 and to_end:
        return split
    return f"{split}[{start or ''}:{'' if to_end else stop}]"


# Label rules (implemented in tfds_prepare.py): "label" = the TFDS `label` feature as is.
LABEL_RULES = ("label", "clevr_count", "clevr_closest_distance", "kitti_closest_vehicle_distance",
               "dsprites_x_position_16", "dsprites_orientation_16", "smallnorb_azimuth", "smallnorb_elevation")
# Image rules: "rgb" = the TFDS `image` feature (grey repeated to 3 channels); dsprites is 0/1 -> 0/255.
IMAGE_RULES = ("rgb", "dsprites_binary", "smallnorb_first_camera")


def _vtab(name, group, num_classes, test_size, *, tfds, version, version_vpt, source_sizes, rule,
          folder=None, petl=None, spt, vpt, label="label", image="rgb", **extra_meta):
    assert label in LABEL_RULES and image in IMAGE_RULES
    names = [folder or name, petl or name, spt, spt.split("/")[-1], vpt]
    # Case variants (`CIFAR100`) are kept: lookup ignores case but folder names on disk do not.
    aliases = tuple(dict.fromkeys(a for a in names if a != name))
    return register_task(TaskSpec(
        name=name, benchmark="vtab1k", group=group, num_classes=num_classes, aliases=aliases,
        test_size=test_size,
        meta=dict(tfds_name=tfds, tfds_version=version, tfds_version_vpt=version_vpt,
                  tfds_source_sizes=dict(source_sizes), split_rule=rule,
                  splits=rule.slice_strings(source_sizes), label_rule=label, image_rule=image, **extra_meta),
    ))


_P90 = SplitRule("train", 90, "test")
_VALIDATION = SplitRule("validation", 0, "test")

# ---- natural ----
_vtab("caltech101", "natural", 102, 6084, tfds="caltech101", version="3.*.*", version_vpt="3.0.1",
      source_sizes={"train": 3060, "test": 6084}, rule=_P90,
      spt="Natural/Caltech101", vpt="vtab-caltech101",
      # TFDS draws the 30 train images per class from a directory listing, so SHIP's copy has 6,085 test
      # images (implied by its logged accuracy) where the TFDS 3.0.0 catalog lists 6,084.
      accepted_test_sizes=(6084, 6085))
_vtab("cifar100", "natural", 100, 10000, tfds="cifar100", version="3.*.*", version_vpt="3.0.2",
      source_sizes={"train": 50000, "test": 10000}, rule=_P90,
      folder="cifar", petl="cifar", spt="Natural/CIFAR100", vpt="vtab-cifar(num_classes=100)")
_vtab("dtd", "natural", 47, 1880, tfds="dtd", version="3.*.*", version_vpt="3.0.1",
      source_sizes={"train": 1880, "validation": 1880, "test": 1880}, rule=_VALIDATION,
      spt="Natural/DTD", vpt="vtab-dtd")
_vtab("oxford_flowers102", "natural", 102, 6149, tfds="oxford_flowers102", version="2.*.*", version_vpt="2.1.1",
      source_sizes={"train": 1020, "validation": 1020, "test": 6149}, rule=_VALIDATION,
      spt="Natural/oxford_flowers102", vpt="vtab-oxford_flowers102")
_vtab("oxford_pet", "natural", 37, 3669, tfds="oxford_iiit_pet", version="3.*.*", version_vpt="3.2.0",
      source_sizes={"train": 3680, "test": 3669}, rule=SplitRule("train", 80, "test"),
      folder="oxford_iiit_pet", petl="oxford_iiit_pet", spt="Natural/oxford_iiit_pet", vpt="vtab-oxford_iiit_pet")
_vtab("svhn", "natural", 10, 26032, tfds="svhn_cropped", version="3.*.*", version_vpt="3.0.0",
      source_sizes={"train": 73257, "test": 26032}, rule=_P90,
      spt="Natural/SVHN", vpt="vtab-svhn")
_vtab("sun397", "natural", 397, 21750, tfds="sun397/tfds", version="4.*.*", version_vpt="4.0.0",
      source_sizes={"train": 76128, "validation": 10875, "test": 21750}, rule=_VALIDATION,
      spt="Natural/SUN397", vpt="vtab-sun397")

# ---- specialized ----
_vtab("patch_camelyon", "specialized", 2, 32768, tfds="patch_camelyon", version="2.*.*", version_vpt="2.0.0",
      source_sizes={"train": 262144, "validation": 32768, "test": 32768}, rule=_VALIDATION,
      spt="Specialized/Patch_Camelyon", vpt="vtab-patch_camelyon")
_vtab("eurosat", "specialized", 10, 5400, tfds="eurosat/rgb", version="2.*.*", version_vpt="2.0.0",
      source_sizes={"train": 27000}, rule=SplitRule("train", 60, "train", 80),
      spt="Specialized/Eurosat", vpt="vtab-eurosat")
_vtab("resisc45", "specialized", 45, 6300, tfds="resisc45", version="3.*.*", version_vpt="3.0.0",
      source_sizes={"train": 31500}, rule=SplitRule("train", 60, "train", 80),
      spt="Specialized/Resisc45", vpt="vtab-resisc45")
_vtab("diabetic_retinopathy", "specialized", 5, 42670, tfds="diabetic_retinopathy_detection/btgraham-300",
      version="3.*.*", version_vpt="3.0.0",
      source_sizes={"train": 35126, "validation": 10906, "test": 42670}, rule=_VALIDATION,
      spt="Specialized/Retinopathy", vpt='vtab-diabetic_retinopathy(config="btgraham-300")')

# ---- structured ----
# CLEVR's own test split has no scene annotations, so VTAB's test is the TFDS validation split.
_CLEVR = SplitRule("train", 90, "validation")
_CLEVR_SIZES = {"train": 70000, "validation": 15000}
_vtab("clevr_count", "structured", 8, 15000, tfds="clevr", version="3.*.*", version_vpt="3.1.0",
      source_sizes=_CLEVR_SIZES, rule=_CLEVR, label="clevr_count",
      spt="Structured/Clevr_Count", vpt='vtab-clevr(task="count_all")')
_vtab("clevr_dist", "structured", 6, 15000, tfds="clevr", version="3.*.*", version_vpt="3.1.0",
      source_sizes=_CLEVR_SIZES, rule=_CLEVR, label="clevr_closest_distance",
      spt="Structured/Clevr_Dist", vpt='vtab-clevr(task="closest_object_distance")')
_vtab("dmlab", "structured", 6, 22735, tfds="dmlab", version="2.0.1", version_vpt="2.0.1",
      source_sizes={"train": 65550, "validation": 22628, "test": 22735}, rule=_VALIDATION,
      spt="Structured/DMLab", vpt="vtab-dmlab")
_vtab("kitti", "structured", 4, 711, tfds="kitti", version="3.2.0", version_vpt="3.2.0",
      source_sizes={"train": 6347, "validation": 423, "test": 711}, rule=_VALIDATION,
      label="kitti_closest_vehicle_distance",
      spt="Structured/Kitti", vpt='vtab-kitti(task="closest_vehicle_distance")',
      tfds_version_upstream="3.1.0")
_DSPRITES = SplitRule("train", 80, "train", 90)
_vtab("dsprites_loc", "structured", 16, 73728, tfds="dsprites", version="2.*.*", version_vpt="2.0.0",
      source_sizes={"train": 737280}, rule=_DSPRITES, label="dsprites_x_position_16", image="dsprites_binary",
      spt="Structured/Dsprites_loc",
      vpt='vtab-dsprites(predicted_attribute="label_x_position",num_classes=16)')
_vtab("dsprites_ori", "structured", 16, 73728, tfds="dsprites", version="2.*.*", version_vpt="2.0.0",
      source_sizes={"train": 737280}, rule=_DSPRITES, label="dsprites_orientation_16", image="dsprites_binary",
      spt="Structured/Dsprites_ori",
      vpt='vtab-dsprites(predicted_attribute="label_orientation",num_classes=16)')
# smallNORB takes val200 from the start of the TFDS test split and VTAB's test from its second half.
_SMALLNORB = SplitRule("test", 0, "test", 50)
_vtab("smallnorb_azi", "structured", 18, 12150, tfds="smallnorb", version="2.*.*", version_vpt="2.0.0",
      source_sizes={"train": 24300, "test": 24300}, rule=_SMALLNORB,
      label="smallnorb_azimuth", image="smallnorb_first_camera",
      spt="Structured/Smallnorb_azi", vpt='vtab-smallnorb(predicted_attribute="label_azimuth")')
_vtab("smallnorb_ele", "structured", 9, 12150, tfds="smallnorb", version="2.*.*", version_vpt="2.0.0",
      source_sizes={"train": 24300, "test": 24300}, rule=_SMALLNORB,
      label="smallnorb_elevation", image="smallnorb_first_camera",
      spt="Structured/Smallnorb_ele", vpt='vtab-smallnorb(predicted_attribute="label_elevation")')
