"""Each property: its metric against its control, by a margin, with a message that says why."""

import math

import pytest

from pytest_icl.analysis.properties import DEFAULT_MARGINS, PROPERTIES, check_property, margins_for, parse_margin

VALUES = {
    "acc_zsl": 0.50, "acc_icl": 0.83, "rec2ftp": 1.0, "rec2ftp_chance": 0.72, "simaou": 0.315,
    "simaou_fair_random": 0.111, "simam_before": 0.459, "simam_after": 0.463, "kendall": 0.068, "kendall_random": -0.001,
}  # fmt: skip


@pytest.mark.parametrize("name", PROPERTIES)
def test_a_property_holds_exactly_when_metric_minus_control_reaches_the_margin(name):
    p = PROPERTIES[name]
    gap = VALUES[p.metric] - VALUES[p.control]
    assert check_property(name, VALUES, margin=gap - 1e-9).passed
    assert not check_property(name, VALUES, margin=gap + 1e-9).passed


def test_the_message_gives_value_interval_control_difference_and_margin():
    check = check_property("simaou", VALUES, {"simaou": (0.30, 0.33)}, margin=0.25)
    assert check.message == (
        "SimAOU above the fair random-update SimAOU: does not hold. simaou = 0.3150 (95% CI 0.300…0.330), "
        "control simaou_fair_random = 0.1110, difference +0.2040, required ≥ +0.2500"
    )


def test_rec2ftp_says_how_few_examples_it_rests_on():
    check = check_property("rec2ftp", VALUES, margin=0.0, counts={"ft_fixed": 3, "eval": 64})
    assert check.passed and check.support == 3
    assert check.message.endswith("; rec2ftp is over 3 example(s) (zero-shot wrong, FT right)")
    assert check_property("simaou", VALUES, margin=0.0, counts={"ft_fixed": 3}).support is None


def test_an_undefined_metric_fails_and_says_what_to_try():
    check = check_property("rec2ftp", {**VALUES, "rec2ftp": math.nan}, margin=-1.0, counts={"ft_fixed": 0})
    assert not check.passed
    assert check.message.endswith("rec2ftp is undefined: FT fixed none of the zero-shot errors (try another --icl-lr or more shots)")


def test_margins_command_line_beats_task_beats_defaults():
    margins = margins_for({"accuracy": 0.15, "simam": 0.01}, {"simam": 0.05})
    assert margins == {**DEFAULT_MARGINS, "accuracy": 0.15, "simam": 0.05}
    with pytest.raises(ValueError, match="unknown threshold name"):
        margins_for({"simaoo": 0.1}, {})


@pytest.mark.parametrize(("text", "error"), [("simaou", "NAME=VALUE"), ("nope=1", "NAME=VALUE"), ("kendall=high", "not a number")])
def test_parse_margin(text, error):
    assert parse_margin(" SimAOU=0.05") == ("simaou", 0.05)
    with pytest.raises(ValueError, match=error):
        parse_margin(text)
