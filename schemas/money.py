"""The one way dollar amounts are written, in plan text, plan decisions and notes, comparisons, run and
bench reports (here so that both the compiler and the runtime can reach it)."""

from __future__ import annotations

import math
from typing import Optional

MAX_DECIMALS = 6


def usd(x: Optional[float]) -> str:
    """"-" for no figure; from $1,000 whole dollars ($1,034); from $1 cents ($313.73); below $1 up to two
    significant digits, at least cents ($0.64, $0.06, $0.069, $0.00031); a negative amount as -$12.50."""
    if x is None:
        return "-"
    sign = "-" if x < 0 else ""
    a = abs(x)
    if round(a, 2) >= 1000:
        return f"{sign}${a:,.0f}"
    if a >= 1 or a == 0:
        return f"{sign}${a:,.2f}"
    decimals = min(MAX_DECIMALS, max(2, 1 - math.floor(math.log10(a))))
    text = f"{a:.{decimals}f}"
    while len(text.split(".")[1]) > 2 and text.endswith("0"):  # $0.06, not $0.060
        text = text[:-1]
    return f"{sign}${text}"
