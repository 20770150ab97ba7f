"""Measured complexity: power-law fits of time and memory against length, checks against the declared complexity,
and the crossovers between mixers.

A fit is least squares of ln(value) on ln(length): value ≈ c · L^exponent. Its residual is the root mean square of
the ln-residuals, so 0.05 means the points sit within about 5% of the line. Fixed costs (projections, kernel
launches, Python) flatten the curve at short lengths, so the exponent the sweep is judged by is the one fitted over
its longest half (`long_length_fit`); the fit over every point is reported beside it.

A declared complexity is the spec's string (`"L"`, `"L^2"`, `"L log L"`, `"L k d²"`, `"L log L (fft) / L N
(recurrent)"`): alternatives split on `/`, parenthesized notes dropped, and in each alternative the power of the
length variable (`L` for sequence mixers, `N` — the number of grid points — for grid mixers) and of `log L` are
read; every other symbol is a constant of the sweep. Over a range of lengths L^p (log L)^q has the local log-log
slope p + q · Δln ln L / Δln L, which is what a measured exponent is compared with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

# How far a measured exponent may sit from the declared one before a warning. Fixed per-call costs pull measured
# exponents down at short lengths (attention at dim 256 measures 1.5-1.7 over L = 1k..4k on a CPU, its L·D²
# projections still a fifth of the work at 4k), so the band is wider below than above.
TOLERANCE_BELOW = 0.5
TOLERANCE_ABOVE = 0.3


@dataclass(frozen=True)
class PowerFit:
    """value ≈ coefficient · length^exponent, fitted over `points` lengths from `shortest` to `longest`."""

    exponent: float
    coefficient: float
    residual: float
    points: int
    shortest: float
    longest: float

    def predict(self, length: float) -> float:
        return self.coefficient * length ** self.exponent

    def describe(self) -> str:
        return f"{self.exponent:.2f} (±{100 * (math.exp(self.residual) - 1):.0f}%)"


def fit_power_law(lengths: Sequence[float], values: Sequence[float]) -> PowerFit | None:
    """Least squares of ln(value) on ln(length), over the points with a finite positive value; None with fewer
    than two distinct lengths."""
    pairs = sorted((float(n), float(v)) for n, v in zip(lengths, values)
                   if n > 0 and v is not None and math.isfinite(v) and v > 0)
    if len({n for n, _ in pairs}) < 2:
        return None
    xs = [math.log(n) for n, _ in pairs]
    ys = [math.log(v) for _, v in pairs]
    x_mean, y_mean = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = (sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys))
             / sum((x - x_mean) ** 2 for x in xs))
    intercept = y_mean - slope * x_mean
    residual = math.sqrt(sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys)) / len(xs))
    return PowerFit(slope, math.exp(intercept), residual, len(pairs), pairs[0][0], pairs[-1][0])


def long_length_fit(lengths: Sequence[float], values: Sequence[float], min_points: int = 3) -> PowerFit | None:
    """The fit over the longest half of the points (at least `min_points`, or all when there are fewer)."""
    pairs = sorted((n, v) for n, v in zip(lengths, values) if v is not None and math.isfinite(v) and v > 0)
    keep = max(min_points, math.ceil(len(pairs) / 2))
    tail = pairs[-keep:]
    return fit_power_law([n for n, _ in tail], [v for _, v in tail])


@dataclass(frozen=True)
class DeclaredComplexity:
    """One alternative of a declared complexity: length^power · (log length)^log_power."""

    text: str
    power: float
    log_power: int = 0

    def local_exponent(self, shortest: float, longest: float) -> float:
        """The log-log slope of L^power (ln L)^log_power between two lengths (its tangent when they are equal)."""
        if not self.log_power:
            return self.power
        shortest, longest = max(shortest, 3.0), max(longest, 3.0)  # ln ln L needs L > e
        if longest <= shortest:
            return self.power + self.log_power / math.log(longest)
        log_slope = (math.log(math.log(longest)) - math.log(math.log(shortest))) / (math.log(longest) - math.log(shortest))
        return self.power + self.log_power * log_slope


_SUPERSCRIPTS = {"²": 2.0, "³": 3.0}


def parse_complexity(text: str, variable: str = "L") -> list[DeclaredComplexity]:
    """The alternatives of a declared complexity string that mention `variable` (others cannot be checked)."""
    alternatives = []
    power_pattern = re.compile(rf"^{re.escape(variable)}(?:\^\(?(\d+(?:\.\d+)?)\)?|([²³]))?$")
    for alternative in text.split("/"):
        cleaned = re.sub(r"\([^)]*\)", " ", alternative)
        tokens = re.sub(r"[·*×]", " ", cleaned).split()
        power, log_power, mentions = 0.0, 0, False
        index = 0
        while index < len(tokens):
            token = tokens[index]
            if token == "log" and index + 1 < len(tokens) and power_pattern.match(tokens[index + 1]):
                log_power += 1
                mentions = True
                index += 2
                continue
            match = power_pattern.match(token)
            if match:
                mentions = True
                power += float(match.group(1)) if match.group(1) else _SUPERSCRIPTS.get(match.group(2), 1.0)
            index += 1
        if mentions:
            alternatives.append(DeclaredComplexity(" ".join(alternative.split()), power, log_power))
    return alternatives


def expected_complexity(time_complexity: str, memory_complexity: str, *, mode: str, state: str,
                        variable: str = "L") -> tuple[list[DeclaredComplexity], list[DeclaredComplexity]]:
    """What the declared complexities predict for the measured call, as (time, memory) alternatives.

    `fwd` and `fwdbwd` process the whole sequence, so the declared strings apply as they are. `step` processes
    one token after L: a fixed-size state makes it constant in L; a growing state (a key-value cache, a filter
    over the history) costs one power of L less than the whole sequence, in time and in memory (O(L)).
    """
    time = parse_complexity(time_complexity, variable)
    memory = parse_complexity(memory_complexity, variable)
    if mode != "step":
        return time, memory
    if state == "fixed":
        constant = DeclaredComplexity("1 per token (fixed state)", 0.0)
        return [constant], [constant]
    per_token = [DeclaredComplexity(f"({d.text}) / L per token", max(0.0, d.power - 1), d.log_power) for d in time]
    return per_token, [DeclaredComplexity("L (growing state)", 1.0)]


def contradiction(fit: PowerFit | None, declared: list[DeclaredComplexity], what: str = "time") -> str | None:
    """A warning when the fitted exponent matches none of the declared alternatives, else None."""
    if fit is None or not declared or fit.points < 3:
        return None
    expected = [d.local_exponent(fit.shortest, fit.longest) for d in declared]
    if any(e - TOLERANCE_BELOW <= fit.exponent <= e + TOLERANCE_ABOVE for e in expected):
        return None
    said = " or ".join(f"'{d.text}' (≈{e:.2f})" for d, e in zip(declared, expected))
    hint = "; fixed per-call costs may still dominate at these lengths" if fit.exponent < min(expected) else ""
    return (f"{what} grows as L^{fit.exponent:.2f} over L = {fit.shortest:g}..{fit.longest:g}, "
            f"which contradicts the declared {said}{hint}")


@dataclass(frozen=True)
class Crossover:
    """Where two mixers' times cross: from `length` on, `faster` is faster (None: no crossing in the range)."""

    first: str
    second: str
    length: float | None
    faster: str
    shortest: float
    longest: float
    ratio_at_longest: float  # slower / faster at the longest common length
    crossings: int = 0

    def describe(self) -> str:
        other = self.second if self.faster == self.first else self.first
        if self.length is None:
            return (f"{self.first} vs {self.second}: none in range ({self.shortest:g}..{self.longest:g}); "
                    f"{self.faster} is faster throughout, {self.ratio_at_longest:.2f}× at L = {self.longest:g}")
        more = f" (the curves cross {self.crossings} times; this is the last)" if self.crossings > 1 else ""
        return (f"{self.first} vs {self.second}: {self.faster} is faster than {other} from L ≈ {self.length:,.0f}"
                f"{more}, {self.ratio_at_longest:.2f}× at L = {self.longest:g}")


def crossover(first: str, lengths_first: Sequence[float], times_first: Sequence[float],
              second: str, lengths_second: Sequence[float], times_second: Sequence[float]) -> Crossover | None:
    """The length from which one mixer is faster than the other, by linear interpolation of ln(time ratio) in
    ln(length) between the two measured lengths where its sign changes last. None without a common length."""
    a = {float(n): t for n, t in zip(lengths_first, times_first) if t is not None and math.isfinite(t) and t > 0}
    b = {float(n): t for n, t in zip(lengths_second, times_second) if t is not None and math.isfinite(t) and t > 0}
    common = sorted(set(a) & set(b))
    if not common:
        return None
    gaps = [math.log(a[n]) - math.log(b[n]) for n in common]  # > 0: second is faster
    longest = common[-1]
    faster = second if gaps[-1] > 0 else first
    ratio = math.exp(abs(gaps[-1]))
    changes = [i for i in range(len(common) - 1) if (gaps[i] > 0) != (gaps[i + 1] > 0)]
    if not changes:
        return Crossover(first, second, None, faster, common[0], longest, ratio)
    i = changes[-1]
    x0, x1 = math.log(common[i]), math.log(common[i + 1])
    where = x0 + (x1 - x0) * gaps[i] / (gaps[i] - gaps[i + 1])
    return Crossover(first, second, math.exp(where), faster, common[0], longest, ratio, len(changes))
