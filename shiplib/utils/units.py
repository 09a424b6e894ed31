"""Measured quantities as text with their unit ("0.799 s", "1.02×", "159 img/s", "267 GFLOPs", "29.0 MB"): tables
read the same way everywhere, and machine-dependent timings are recognisable by their unit."""
from __future__ import annotations

import math


def significant(x: float, digits: int = 3) -> str:
    """`digits` significant digits in fixed notation (never an exponent): 0.0384, 0.799, 12.3, 159, 1590."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.{max(0, digits - 1 - math.floor(math.log10(abs(x))))}f}"


def missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def format_seconds(v) -> str:
    return "–" if missing(v) else f"{significant(v)} s"


def format_ratio(v) -> str:
    return "–" if missing(v) else f"{v:.2f}\u00d7"


def format_throughput(v) -> str:
    return "–" if missing(v) else f"{significant(v)} img/s"


def format_flops(gflops) -> str:
    """FLOPs given in GFLOPs, with a unit that keeps 3 significant digits readable: 267 GFLOPs, 193 MFLOPs."""
    if missing(gflops):
        return "–"
    flops = gflops * 1e9
    for unit, scale in (("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6), ("kFLOPs", 1e3)):
        if abs(flops) >= scale:
            return f"{significant(flops / scale)} {unit}"
    return f"{flops:.0f} FLOPs"


def format_megabytes(v) -> str:
    return "–" if missing(v) else f"{significant(v)} MB"


def format_bytes(n: float) -> str:
    """Binary units with one decimal: 512 B, 1.5 kB, 29.0 MB, 2.0 GB."""
    for unit, size in (("TB", 2 ** 40), ("GB", 2 ** 30), ("MB", 2 ** 20), ("kB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"
