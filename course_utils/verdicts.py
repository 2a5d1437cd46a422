"""Does a short CPU run show a paper's accuracy effect? One sentence, read from the numbers.

    gap = accuracy_gap(0.612, 0.587, n=3000)      # Gap(difference=0.025, half_width=0.0245)
    effect_verdict(("ZFNet", 0.612), ("AlexNet", 0.587), n=3000, scale=SCALE,
                   paper_scale="ImageNet, 1.28 M images, 70 epochs")

The walk's notebooks train their networks for minutes on a subset, with one seed. A difference of a
point or two between two such networks can be noise, so a verdict is only "reproduced" when the
difference clears the 95% interval of test-set sampling. That interval treats the two accuracies as
independent proportions on ``n`` images each: for two networks scored on the *same* images it is
conservative (their errors are correlated). It leaves out seed-to-seed spread, which at this scale
can be as large again, so the sentence says that it is one seed. Where the effect does not clear
the interval, the sentence says so plainly and names the scale at which the paper showed it.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from .errors import CourseError

EXPECTATIONS = ("higher", "equal")  # the first network should beat the second / match it


class Gap(NamedTuple):
    difference: float  # accuracy of the first network minus the second's
    half_width: float  # of the 95% interval from test-set sampling alone


def accuracy_gap(acc_a: float, acc_b: float, n: int, z: float = 1.96) -> Gap:
    """``acc_a - acc_b`` on ``n`` test images each, with the half-width of its normal 95% interval.

    half-width = z * sqrt(a (1 - a) / n + b (1 - b) / n): two independent binomial proportions.
    """
    if n <= 0:
        raise CourseError(f"accuracy_gap needs the number of test images, got n={n}. Pass len(test labels).")
    for name, acc in (("acc_a", acc_a), ("acc_b", acc_b)):
        if not 0.0 <= acc <= 1.0 or math.isnan(acc):
            raise CourseError(f"{name}={acc} is not an accuracy in [0, 1]. Pass a fraction, not a percentage.")
    return Gap(acc_a - acc_b, z * math.sqrt((acc_a * (1 - acc_a) + acc_b * (1 - acc_b)) / n))


def effect_verdict(first: tuple[str, float], second: tuple[str, float], *, n: int, scale: str,
                   paper_scale: str, expect: str = "higher") -> str:
    """One sentence: did this run show that ``first`` beats (``expect="higher"``) or matches
    (``expect="equal"``) ``second`` in test accuracy? ``first``/``second`` are ``(name, accuracy)``;
    ``scale`` is this run's, ``paper_scale`` the one at which the paper showed the effect.
    """
    if expect not in EXPECTATIONS:
        raise CourseError(f"unknown expectation {expect!r}. Use one of: {', '.join(EXPECTATIONS)}.")
    (name_a, acc_a), (name_b, acc_b) = first, second
    gap = accuracy_gap(acc_a, acc_b, n)
    facts = (f"{name_a} {acc_a:.3f} against {name_b} {acc_b:.3f} test accuracy on {n:,} images, a difference of "
             f"{100 * gap.difference:+.1f} points against ±{100 * gap.half_width:.1f} points of test-set "
             f"sampling (95%; one seed, so seed-to-seed spread is not in that interval)")
    beyond = abs(gap.difference) > gap.half_width
    tail = f"The paper showed it with {paper_scale}: the `paper` tier is the closer test."
    if expect == "equal":  # the claim is "no loss": a gain beyond noise is consistent with it
        if not beyond or gap.difference > 0:
            return f"Consistent with the paper at this scale (no loss beyond noise): {facts}."
        return (f"At this scale ({scale}) {name_a} lost accuracy against {name_b} beyond noise, where the paper "
                f"claims no loss: {facts}. {tail}")
    if beyond and gap.difference > 0:
        return f"Reproduced at this scale: {facts}."
    what = "the OPPOSITE showed up" if beyond else "the paper's effect did NOT show up clearly"
    return f"At this scale ({scale}) {what}: {facts}. {tail}"


__all__ = ["EXPECTATIONS", "Gap", "accuracy_gap", "effect_verdict"]
