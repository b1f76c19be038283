"""The catalogue: every metric, property and control of pytest-icl, each named in one row.

The layers read these tables instead of spelling names of their own: the analysis checks
:data:`PROPERTIES`; the controls run what :data:`CONTROLS` lists; the report tabulates
:data:`COLUMNS`, draws :data:`FIGURES` and the metrics' lines, compares with a baseline every
metric that has a tolerance; the plugin makes an item per property and per control with a
verdict, and gives JUnit :func:`headline_metrics`. A name that is in no row is in no table, so
nothing can be forgotten silently (``tests/unit/test_catalogue.py`` checks the rows against the
analysis and the control modules).

* Adding a metric: its function (:mod:`pytest_icl.analysis.metrics`, one line of
  :func:`pytest_icl.analysis.aggregate.analyse`) and one :class:`Metric` row.
* Adding a control: one module ``pytest_icl/controls/<name>.py`` whose ``CONTROL`` is a
  :class:`pytest_icl.controls.base.Control`, and one :class:`Control` row.

Order matters where it shows: :data:`METRICS` gives the order of the baseline comparison, of
the curves in each figure and of the JUnit properties; :data:`CONTROLS` that of the controls.

Plain frozen dataclasses and tuples, no imports from the package: every layer may read it
without pulling in another (or torch).

Example::

    from pytest_icl import catalogue
    [m.name for m in catalogue.METRICS if m.tolerance is not None]   # compared with baselines
    catalogue.control("lcgd").verdict                                 # False: reported beside GD
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------
# metrics: the keys of Analysis.values (pytest_icl.analysis.aggregate documents each)

# A metric's kind: "score", a number a property or a baseline judges (higher is better);
# "control", what a score is compared with in the same run (a chance level, a random baseline);
# "diagnostic", shown to explain a result.
KINDS = ("score", "control", "diagnostic")


@dataclass(frozen=True)
class Line:
    """How a curve is drawn: legend label, colour, matplotlib line style."""

    label: str
    colour: str
    style: str = "-"


@dataclass(frozen=True)
class Figure:
    """A per-layer figure of a pair, ``<model>-<task>-<name>.png``; its curves are the metrics drawn in it."""

    name: str
    title: str
    ylabel: str
    panel: str  # the figure's panel title against a baseline


@dataclass(frozen=True)
class ControlFigure:
    """A figure of a metric's per-layer curve beside the same metric of every control run."""

    title: str
    ylabel: str
    beside: str | None = None  # the metric's own in-run control, drawn dotted


@dataclass(frozen=True)
class Metric:
    """One number of an analysis.

    ``label`` names it in legends and tables; ``about`` says what it is (the baseline's messages
    use it). ``tolerance``: compared with a stored baseline (higher is better) and this is the
    default absolute tolerance; None: stored and plotted, never compared. ``figure`` and ``line``:
    the per-layer figure it is drawn in. ``headline``: one of the scalars JUnit records per pair.
    """

    name: str
    label: str
    about: str
    kind: str
    per_layer: bool
    tolerance: float | None = None
    figure: str | None = None
    line: Line | None = None
    control_figure: ControlFigure | None = None
    headline: bool = False

    @property
    def compared(self) -> bool:
        return self.tolerance is not None


# Tolerances: fractions over eval examples move in steps of 1/n, so they get more room than the
# similarities, which average over examples and layers.
_FRACTION, _SIMILARITY = 0.05, 0.02

# Not compared with baselines, the output-distribution numbers (Shen et al., definitions §12.2): KL is better
# when *lower*, and a baseline's rule is "higher is better" for every metric; and both pairs are
# judged where they mean something, FT's number against ZSL's in the same run (the ``output``
# control), not one run's number against another's.
_OUTPUT = "output-distribution number, judged by the output control within the run, not across runs"
_SHUFFLED = "the shuffled-label control, judged within the run against the real FT, not across runs"

FIGURES = (
    Figure("simaou", "SimAOU per layer", "cosine similarity of updates", "SimAOU"),
    Figure("simam", "SimAM per layer", "cosine similarity of attention maps", "SimAM"),
    Figure("kendall", "Kendall per layer", "Kendall tau-b", "Kendall"),
)

METRICS = (
    Metric("acc_zsl", "ZSL accuracy", "zero-shot accuracy", "score", False, _FRACTION, headline=True),
    Metric("acc_icl", "ICL accuracy", "ICL accuracy", "score", False, _FRACTION, headline=True),
    Metric("acc_ft", "FT accuracy", "FT accuracy", "score", False, _FRACTION, headline=True),
    Metric("majority_zsl", "ZSL majority share", "label-bias diagnostic", "diagnostic", False),
    Metric("majority_icl", "ICL majority share", "label-bias diagnostic", "diagnostic", False),
    Metric("majority_ft", "FT majority share", "label-bias diagnostic", "diagnostic", False),
    Metric("rec2ftp", "Rec2FTP", "Rec2FTP", "score", False, _FRACTION, headline=True),
    Metric("rec2ftp_chance", "Rec2FTP chance", "control of Rec2FTP", "control", False),
    Metric("ft_precision", "FT precision", "P(FT right | ICL corrected)", "score", False, _FRACTION),
    Metric(
        "simaou", "SimAOU", "SimAOU", "score", True, _SIMILARITY, "simaou", Line("SimAOU (ICL vs FT)", "#1f77b4"),
        ControlFigure("SimAOU against the controls", "cosine similarity of updates", "simaou_fair_random"), headline=True,
    ),
    Metric("simaou_fair_random", "fair random FT update", "fair random control of SimAOU", "control", True,
           figure="simaou", line=Line("fair random FT update", "#ff7f0e", "--")),
    Metric("simaou_random", "official random baseline", "random control of SimAOU", "control", True,
           figure="simaou", line=Line("official random baseline", "#7f7f7f", ":")),
    Metric("simaou_unnormalised", "SimAOU (plain difference)", "SimAOU (plain difference)", "score", True, _SIMILARITY),
    Metric("simam_after", "SimAM after", "SimAM after FT", "score", True, _SIMILARITY, "simam",
           Line("SimAM after (ICL vs FT)", "#2ca02c"), headline=True),
    Metric("simam_before", "SimAM before", "control of SimAM (ICL vs ZSL maps)", "control", True,
           figure="simam", line=Line("SimAM before (ICL vs ZSL)", "#7f7f7f", "--")),
    Metric(
        "simam_delta", "SimAM∆", "SimAM∆", "score", True, _SIMILARITY, "simam", Line("SimAM∆ (ICL−ZSL vs FT−ZSL)", "#9467bd"),
        ControlFigure("SimAM∆ against the controls", "cos(ICL − ZSL, FT − ZSL)"),
    ),
    Metric("simam_zsl_ft", "SimAM ZSL vs FT", "diagnostic: how far FT moved the maps", "diagnostic", True),
    Metric(
        "kendall", "Kendall(ICL, FT)", "Kendall(ICL, FT)", "score", True, _SIMILARITY, "kendall", Line("Kendall(ICL, FT)", "#d62728"),
        ControlFigure("Kendall against the controls", "Kendall tau-b", "kendall_random"), headline=True,
    ),
    Metric("kendall_random", "Kendall(ICL, random)", "random control of Kendall", "control", True,
           figure="kendall", line=Line("Kendall(ICL, random)", "#7f7f7f", "--")),
    Metric("kl_icl_ft", "KL(ICL ‖ FT)", f"{_OUTPUT} (lower is better)", "diagnostic", False),
    Metric("kl_icl_zsl", "KL(ICL ‖ ZSL)", f"control of KL(ICL ‖ FT); {_OUTPUT}", "control", False),
    Metric("top10_icl_ft", "top-10 overlap ICL/FT", _OUTPUT, "diagnostic", False),
    Metric("top10_icl_zsl", "top-10 overlap ICL/ZSL", f"control of the top-10 overlap; {_OUTPUT}", "control", False),
    # The default control (issue 15): the same numbers with FT trained on the draw's demonstrations
    # with shuffled labels. Judged within the run against the real FT, so not compared across runs.
    Metric("acc_ft_shuffled", "FT acc (shuffled labels)", f"FT on shuffled labels; {_SHUFFLED}", "control", False),
    Metric("simaou_shuffled", "SimAOU (shuffled labels)", f"control of SimAOU; {_SHUFFLED}", "control", True),
    Metric("simam_after_shuffled", "SimAM after (shuffled labels)", f"control of SimAM after; {_SHUFFLED}", "control", True),
    Metric("simam_delta_shuffled", "SimAM∆ (shuffled labels)", f"control of SimAM∆; {_SHUFFLED}", "control", True),
    Metric("kendall_shuffled", "Kendall (shuffled labels)", f"control of Kendall; {_SHUFFLED}", "control", True),
    Metric("kl_icl_ft_shuffled", "KL(ICL ‖ FT shuffled)", f"control of KL(ICL ‖ FT); {_SHUFFLED}", "control", False),
    Metric("top10_icl_ft_shuffled", "top-10 overlap ICL/FT shuffled", f"control of the top-10 overlap; {_SHUFFLED}", "control", False),
)  # fmt: skip


@dataclass(frozen=True)
class Column:
    """A summary column: its metrics shown as ``a / b``, on the HTML page and (``terminal``) in the terminal table."""

    header: str
    metrics: tuple[str, ...]
    tip: str
    terminal: str | None  # the terminal table's (narrower) header; None: on the page only
    digits: int = 3  # in the terminal table


COLUMNS = (
    Column("ZSL", ("acc_zsl",), "zero-shot accuracy", "ZSL"),
    Column("ICL", ("acc_icl",), "in-context accuracy", "ICL"),
    Column("FT", ("acc_ft",), "accuracy after finetuning on the demonstrations", "FT"),
    Column("Rec2FTP / chance", ("rec2ftp", "rec2ftp_chance"), "Rec2FTP and its chance level P(ICL right | ZSL wrong)",
           "Rec2FTP/chance", digits=2),
    Column("SimAOU / fair random", ("simaou", "simaou_fair_random"), "SimAOU and the fair random-update control", "SimAOU/fair-rand"),
    Column("SimAM before / after", ("simam_before", "simam_after"), "SimAM of ICL vs ZSL maps, and of ICL vs FT maps", "SimAM bef/aft"),
    Column("SimAM∆", ("simam_delta",), "cos(ICL − ZSL, FT − ZSL)", None),
    Column("Kendall / random", ("kendall", "kendall_random"), "Kendall(ICL, FT) and Kendall(ICL, random)", "Kendall/rand"),
)  # fmt: skip

# ---------------------------------------------------------------------------------------------
# properties: Dai et al.'s claims, each a metric against its control by a margin (definitions §12.4)


@dataclass(frozen=True)
class Support:
    """A metric that is a ratio over a subset of the eval examples: how many there were, and what they are."""

    count: str  # a key of Analysis.counts
    subset: str
    when_none: str  # why the metric is undefined when the subset is empty, and what to try


@dataclass(frozen=True)
class Property:
    """``metric`` − ``control`` ≥ ``margin`` (the default margin; the task and the command line override it).

    ``gated``: a claim about ICL *resembling* FT. With the accuracy gate on (the default) it is
    inconclusive for a pair where ICL does not beat zero-shot (:data:`GATE`): there is no ICL
    effect to explain.
    """

    name: str
    metric: str
    control: str
    claim: str
    margin: float
    support: Support | None = None
    gated: bool = False
    # The metric must also beat itself computed with FT on shuffled labels (the default control):
    # a resemblance that shuffled-label FT reaches too is FT moving toward the label words, not
    # FT learning the demonstrations' mapping as ICL does.
    beats_shuffled: bool = False


# Accuracy asks for a visible ICL effect; the similarity margins are zero so that the bootstrap
# intervals in the report, not an arbitrary constant, say how clear a win is.
PROPERTIES = (
    Property("accuracy", "acc_icl", "acc_zsl", "ICL accuracy above zero-shot accuracy", 0.05),
    Property(
        "rec2ftp", "rec2ftp", "rec2ftp_chance", "Rec2FTP above its chance level P(ICL right | ZSL wrong)", 0.0,
        Support("ft_fixed", "zero-shot wrong, FT right", "FT fixed none of the zero-shot errors (try another --icl-lr or more shots)"),
        gated=True,
    ),
    Property("simaou", "simaou", "simaou_fair_random", "SimAOU above the fair random-update SimAOU", 0.0, gated=True,
             beats_shuffled=True),
    Property("simam", "simam_after", "simam_before", "SimAM after FT above SimAM before FT", 0.0, gated=True, beats_shuffled=True),
    Property("kendall", "kendall", "kendall_random", "Kendall(ICL, FT) above Kendall(ICL, random)", 0.0, gated=True,
             beats_shuffled=True),
)  # fmt: skip

GATE = "accuracy"  # the property whose failure makes the gated ones inconclusive

# ---------------------------------------------------------------------------------------------
# controls: the runs Dai et al. lacked (definitions §12.1 Deutch et al., definitions §12.2 Shen et al., definitions §12.4 ours)

CHECKS = "checks"  # shown as one line per check: the real run's value beside the control's
OVER_SEEDS = "over_seeds"  # shown as mean ± sd per metric over the demonstration seeds
SHOWN_AS = (CHECKS, OVER_SEEDS)


@dataclass(frozen=True)
class Variant:
    """One extra run a control makes. ``shown`` names it beside the control in the report ("" when the control has just this one)."""

    name: str
    shown: str
    line: Line  # its curve in the control figures


@dataclass(frozen=True)
class ControlCheck:
    """Real run's ``metric`` against ``control_metric`` of the control run ``variant``.

    ``variant`` None: the control value is in the real run's own analysis (``output``).
    ``better``: "higher" passes when real − control ≥ margin, "lower" when control − real ≥
    margin, None reports the two numbers side by side without a verdict.
    """

    control: str
    variant: str | None
    metric: str
    control_metric: str
    better: str | None
    claim: str


@dataclass(frozen=True)
class OverSeeds:
    """What a control shown :data:`OVER_SEEDS` lists, besides each property's metric and control."""

    terminal: tuple[str, ...]  # the metrics of the terminal's controls table
    extras: tuple[tuple[str, str, str | None], ...]  # the page's extra lines: (metric, what it is, its control or None)


@dataclass(frozen=True)
class Control:
    """A control (``--icl-controls NAME``), run by ``pytest_icl.controls.<name>``.

    ``runs``: what it runs, in words. ``variants``: the extra runs its checks read (none: the
    checks read the real run). ``verdict``: it is an item of the pair that passes or fails;
    without one its numbers are only reported. ``shown``: one of :data:`SHOWN_AS`.
    """

    name: str
    runs: str
    variants: tuple[Variant, ...] = ()
    checks: tuple[ControlCheck, ...] = ()
    verdict: bool = True
    shown: str = CHECKS
    over_seeds: OverSeeds | None = None


def _untrained_checks(variants: tuple[Variant, ...]) -> tuple[ControlCheck, ...]:
    return tuple(
        ControlCheck("untrained", v.name, metric, metric, "higher", f"{label} above the {v.shown} model's")
        for v in variants
        for metric, label in (("simaou", "SimAOU"), ("simam_delta", "SimAM∆"))
    )


_UNTRAINED = (
    Variant("no_training", "no training", Line("untrained: no training", "#8c564b", "--")),
    Variant("trained_embeddings", "trained embeddings", Line("untrained: trained embeddings", "#e377c2", "--")),
)

# Why each control and its checks:
# * untrained (definitions §12.1.3, definitions §12.4.5): Deutch found SimAOU and SimAM∆ of untrained models as high as
#   the trained model's; a similarity is evidence about ICL only where the trained model beats
#   both untrained variants (re-initialised weights; only the embeddings, norms and unembedding).
# * shuffled (definitions §12.4.2): if FT on wrong labels is as similar to ICL as FT on the real labels, the
#   similarity is about the demonstration texts, not the input-label mapping ICL uses.
# * lcgd (definitions §12.1.4): LCGD is a different, arguably fairer FT, not a control with an expected
#   winner (Deutch: LCGD is higher on 5 of 6 tasks, all scores stay low), so it is reported
#   beside GD without a verdict.
# * seeds (Deutch's 3 seeds, Shen): the analysis over S demonstration seeds; it holds when each
#   gated property holds on the mean over seeds, and reports how much the order moves ICL and FT.
# * output (definitions §12.2): Shen et al. find ICL and GD change the output distribution differently; FT
#   behaves like ICL only if it moves the next-token distribution toward ICL's, i.e. FT is
#   closer to ICL than the untouched model (ZSL) is. Its numbers are in every analysis.
CONTROLS = (
    Control("untrained", "ZSL, ICL and FT on the architecture re-initialised (no training; trained embeddings kept)",
            _UNTRAINED, _untrained_checks(_UNTRAINED)),
    Control(
        "shuffled", "FT on the demonstrations with permuted labels (ZSL and ICL are the real run's)",
        (Variant("shuffled", "", Line("FT on shuffled labels", "#ff7f0e", "-.")),),
        (
            ControlCheck("shuffled", "shuffled", "simaou", "simaou", "higher", "SimAOU above FT on shuffled labels"),
            ControlCheck("shuffled", "shuffled", "simam_delta", "simam_delta", "higher", "SimAM∆ above FT on shuffled labels"),
            ControlCheck("shuffled", "shuffled", "kendall", "kendall", "higher", "Kendall(ICL, FT) above FT on shuffled labels"),
        ),
    ),
    Control(
        "lcgd", "FT with Deutch's layer-causal GD, reported beside GD",
        (Variant("lcgd", "", Line("LCGD (layer-causal FT)", "#2ca02c")),),
        (
            ControlCheck("lcgd", "lcgd", "simaou", "simaou", None, "SimAOU of GD beside LCGD"),
            ControlCheck("lcgd", "lcgd", "simaou_unnormalised", "simaou_unnormalised", None, "unnormalised SimAOU of GD beside LCGD"),
            ControlCheck("lcgd", "lcgd", "simam_delta", "simam_delta", None, "SimAM∆ of GD beside LCGD"),
        ),
        verdict=False,
    ),
    Control(
        "seeds", "no extra run: the gated properties over the pair's S demonstration draws; summarise_seeds gives mean ± sd",
        shown=OVER_SEEDS,
        over_seeds=OverSeeds(
            terminal=("acc_icl", "acc_ft", "simaou", "simaou_fair_random", "simam_after", "simam_before", "kendall"),
            extras=(
                ("acc_ft", "FT accuracy", None),
                ("simam_delta", "SimAM∆", None),
                ("kl_icl_ft", "KL(ICL ‖ FT) below KL(ICL ‖ ZSL)", "kl_icl_zsl"),
                ("top10_icl_ft", "top-10 next-token overlap of ICL with FT above ICL with ZSL", "top10_icl_zsl"),
            ),
        ),
    ),
    Control(
        "output", "no extra run: kl_icl_ft, top10_icl_ft and their ZSL controls are in every analysis",
        checks=(
            # Against shuffled-label FT, not ZSL: any FT moves the output toward the label words,
            # so "closer than ZSL" passed for shuffled labels wherever it passed for real FT.
            ControlCheck("output", None, "kl_icl_ft", "kl_icl_ft_shuffled", "lower",
                         "FT's next-token distribution closer to ICL's than shuffled-label FT's is (KL)"),
            ControlCheck("output", None, "top10_icl_ft", "top10_icl_ft_shuffled", "higher",
                         "FT shares more of ICL's top-10 next tokens than shuffled-label FT does"),
        ),
    ),
)  # fmt: skip

# ---------------------------------------------------------------------------------------------
# look-ups


def metric(name: str) -> Metric:
    return _lookup(METRICS, name, "metric")


def prop(name: str) -> Property:
    return _lookup(PROPERTIES, name, "property")


def control(name: str, *, strict: bool = True) -> Control:
    """The row of control ``name``. ``strict=False``: a name in no row (a report row written by
    another version) gets a plain row, shown as checks with a verdict, so it is still shown."""
    if not strict and name not in control_names():
        return Control(name, "")
    return _lookup(CONTROLS, name, "control")


def _lookup(rows, name: str, what: str):
    for row in rows:
        if row.name == name:
            return row
    raise KeyError(f"no {what} named {name!r} in the catalogue; known: {', '.join(r.name for r in rows)}")


def headline_metrics() -> tuple[str, ...]:
    """The metrics JUnit records per pair (``icl.<name>`` user properties), in table order."""
    return tuple(m.name for m in METRICS if m.headline)


def compared_metrics() -> tuple[Metric, ...]:
    """The metrics compared with a stored baseline (those with a tolerance), in comparison order."""
    return tuple(m for m in METRICS if m.compared)


def control_names() -> tuple[str, ...]:
    """What ``--icl-controls`` accepts."""
    return tuple(c.name for c in CONTROLS)


def control_properties() -> tuple[str, ...]:
    """The controls that are items of a pair (they pass or fail); the rest are only reported."""
    return tuple(c.name for c in CONTROLS if c.verdict)


def figure_lines(figure: str) -> tuple[Metric, ...]:
    """The metrics drawn in per-layer figure ``figure``, in drawing order."""
    return tuple(m for m in METRICS if m.figure == figure)
