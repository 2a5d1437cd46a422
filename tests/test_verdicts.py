import math

import pytest

from course_utils.errors import CourseError
from course_utils.verdicts import accuracy_gap, effect_verdict

SCALE = "CIFAR-10: 5000 training images, 8 epochs"
PAPER = "ImageNet, 1.28 M images"


def test_gap_is_the_two_proportion_interval():
    gap = accuracy_gap(0.6, 0.5, 1000)
    assert gap.difference == pytest.approx(0.1)
    assert gap.half_width == pytest.approx(1.96 * math.sqrt((0.6 * 0.4 + 0.5 * 0.5) / 1000))
    assert accuracy_gap(1.0, 1.0, 10).half_width == 0.0


def test_a_clear_gain_is_reproduced_and_a_small_one_is_not():
    clear = effect_verdict(("ZFNet", 0.60), ("AlexNet", 0.50), n=1000, scale=SCALE, paper_scale=PAPER)
    assert clear.startswith("Reproduced at this scale") and "+10.0 points" in clear and "±4.3 points" in clear
    small = effect_verdict(("ZFNet", 0.52), ("AlexNet", 0.50), n=1000, scale=SCALE, paper_scale=PAPER)
    assert "did NOT show up clearly" in small and SCALE in small and PAPER in small


def test_a_clear_loss_is_called_the_opposite():
    text = effect_verdict(("VGG16", 0.40), ("VGG11", 0.50), n=1000, scale=SCALE, paper_scale=PAPER)
    assert "the OPPOSITE showed up" in text and "-10.0 points" in text


def test_equal_expectation_accepts_noise_and_gains_and_flags_a_loss():
    assert effect_verdict(("3x3+3x3", 0.51), ("5x5", 0.50), n=1000, scale=SCALE, paper_scale=PAPER,
                          expect="equal").startswith("Consistent with the paper")
    assert effect_verdict(("3x3+3x3", 0.60), ("5x5", 0.50), n=1000, scale=SCALE, paper_scale=PAPER,
                          expect="equal").startswith("Consistent with the paper")
    loss = effect_verdict(("3x3+3x3", 0.40), ("5x5", 0.50), n=1000, scale=SCALE, paper_scale=PAPER, expect="equal")
    assert "lost accuracy" in loss and PAPER in loss


@pytest.mark.parametrize("kwargs, words", [
    (dict(acc_a=0.5, acc_b=0.5, n=0), "number of test images"),
    (dict(acc_a=55.0, acc_b=0.5, n=10), "not a percentage"),
    (dict(acc_a=float("nan"), acc_b=0.5, n=10), "not an accuracy"),
])
def test_bad_input_names_the_fix(kwargs, words):
    with pytest.raises(CourseError, match=words):
        accuracy_gap(**kwargs)


def test_unknown_expectation_is_named():
    with pytest.raises(CourseError, match="unknown expectation 'lower'"):
        effect_verdict(("a", 0.5), ("b", 0.5), n=10, scale=SCALE, paper_scale=PAPER, expect="lower")
