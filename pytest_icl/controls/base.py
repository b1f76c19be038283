"""The controls Dai et al. lacked, each run through the same pipeline as the real analysis.

Spec §12.1 (Deutch et al. 2024), §12.2 (Shen et al. 2024) and §12.4 (ours). Each control is
named as on the command line (``--icl-controls``):

* ``untrained`` — the same architecture with re-initialised weights (Deutch's "No Training") and
  with only the embeddings, norms and unembedding of the trained model ("Trained Embeddings"):
  ZSL, ICL and FT all run on that model. The similarity of a model that has no ICL is what the
  metric gives for nothing; the trained model must beat it.
* ``shuffled`` — FT on the demonstrations with permuted labels (ZSL and ICL are the real run's):
  real FT must be more similar to ICL than FT that learned the wrong mapping.
* ``lcgd`` — FT with Deutch's layer-causal GD (``finetune``), reported beside GD.
* ``seeds`` — the analysis over S demonstration seeds or permutations: mean ± sd per metric and
  how sensitive ICL and FT are to the demonstrations' order (Shen); :func:`summarise_seeds`.
* ``output`` — KL and top-10 overlap of the next-token distributions, computed inside every
  analysis (``analysis``), so it costs no extra run.

:data:`CONTROL_CHECKS` says which metric of the real run must beat which value of which control
run. Torch and transformers are imported inside functions.

Example::

    base = run_settings(model, tokenizer, task)
    result = run_control("shuffled", model, tokenizer, task, base, batch_size=16, seed=0)
    [outcome.message for outcome in result.outcomes]
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

    from pytest_icl.analysis.aggregate import Analysis
    from pytest_icl.engine.runs import Records
    from pytest_icl.tasks.loading import IclTask

CONTROLS = ("untrained", "shuffled", "lcgd", "seeds", "output")
RUNNABLE = ("untrained", "shuffled", "lcgd")  # the ones run_control runs; seeds and output need no extra model run here
UNTRAINED_MODES = ("no_training", "trained_embeddings")


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


#: The control properties (spec §12.1, §12.2, §12.4). Why each:
#: * untrained (§12.1.3, §12.4.5): Deutch found SimAOU and SimAM∆ of untrained models as high as
#:   the trained model's; a similarity is evidence about ICL only where the trained model beats
#:   both untrained variants.
#: * shuffled (§12.4.2): if FT on wrong labels is as similar to ICL as FT on the real labels, the
#:   similarity is about the demonstration texts, not the input-label mapping ICL uses.
#: * lcgd (§12.1.4): LCGD is a different, arguably fairer FT, not a control with an expected
#:   winner (Deutch: LCGD is higher on 5 of 6 tasks, all scores stay low), so it is reported
#:   beside GD without a verdict.
#: * output (§12.2): Shen et al. find ICL and GD change the output distribution differently; FT
#:   behaves like ICL only if it moves the next-token distribution toward ICL's, i.e. FT is
#:   closer to ICL than the untouched model (ZSL) is.
#: * seeds has no pass/fail row: :func:`summarise_seeds` gives mean ± sd and order sensitivity.
CONTROL_CHECKS: tuple[ControlCheck, ...] = (
    *(
        ControlCheck("untrained", mode, metric, metric, "higher", f"{label} above the {mode.replace('_', ' ')} model's")
        for mode in UNTRAINED_MODES
        for metric, label in (("simaou", "SimAOU"), ("simam_delta", "SimAM∆"))
    ),
    ControlCheck("shuffled", "shuffled", "simaou", "simaou", "higher", "SimAOU above FT on shuffled labels"),
    ControlCheck("shuffled", "shuffled", "simam_delta", "simam_delta", "higher", "SimAM∆ above FT on shuffled labels"),
    ControlCheck("shuffled", "shuffled", "kendall", "kendall", "higher", "Kendall(ICL, FT) above FT on shuffled labels"),
    ControlCheck("lcgd", "lcgd", "simaou", "simaou", None, "SimAOU of GD beside LCGD"),
    ControlCheck("lcgd", "lcgd", "simaou_unnormalised", "simaou_unnormalised", None, "unnormalised SimAOU of GD beside LCGD"),
    ControlCheck("lcgd", "lcgd", "simam_delta", "simam_delta", None, "SimAM∆ of GD beside LCGD"),
    ControlCheck("output", None, "kl_icl_ft", "kl_icl_zsl", "lower", "FT's next-token distribution closer to ICL's than ZSL's is (KL)"),
    ControlCheck("output", None, "top10_icl_ft", "top10_icl_zsl", "higher", "FT shares more of ICL's top-10 next tokens than ZSL does"),
)


@dataclass(frozen=True)
class CheckOutcome:
    check: ControlCheck
    value: float  # the real run's metric
    control: float
    margin: float = 0.0

    @property
    def passed(self) -> bool | None:
        """True/False for a check with a verdict; None for a side-by-side report (or a missing number)."""
        if self.check.better is None or math.isnan(self.value) or math.isnan(self.control):
            return None
        gain = self.value - self.control if self.check.better == "higher" else self.control - self.value
        return gain >= self.margin

    @property
    def message(self) -> str:
        c = self.check
        where = f"{c.variant} run" if c.variant else "same run"
        numbers = f"{c.metric} = {self.value:.4f}, control {c.control_metric} ({where}) = {self.control:.4f}"
        if self.passed is None:
            verdict = "reported" if c.better is None else "undefined (a value is NaN or the records lack it)"
            return f"{c.claim}: {verdict}. {numbers}"
        verdict = "holds" if self.passed else "does not hold"
        return f"{c.claim}: {verdict}. {numbers}, required {c.better} by ≥ {self.margin:+.4f}"


@dataclass
class ControlResult:
    name: str
    analyses: dict[str, Analysis]  # variant -> the control run's analysis
    seconds: dict[str, float]  # variant -> wall time of its run and analysis
    outcomes: list[CheckOutcome] = field(default_factory=list)


def check_control(name: str, base: Analysis, analyses: dict[str, Analysis], *, margin: float = 0.0) -> list[CheckOutcome]:
    """Every row of :data:`CONTROL_CHECKS` for ``name``, on the real and the control analyses."""
    outcomes = []
    for check in CONTROL_CHECKS:
        if check.control != name:
            continue
        source = base if check.variant is None else analyses.get(check.variant)
        if source is None:
            continue
        value = base.values.get(check.metric, math.nan)
        control = source.values.get(check.control_metric, math.nan)
        outcomes.append(CheckOutcome(check, value, control, margin))
    return outcomes


# ---------------------------------------------------------------------------------------------
# untrained models (Deutch §12.1.3)


def trained_embedding_names(model: nn.Module) -> list[str]:
    """Parameters "Trained Embeddings" keeps: input and positional embeddings, every norm, the unembedding.

    As Deutch's code (``model_trained=0`` loads embeddings, LayerNorms and the output projection).
    Norms are found by type (``nn.LayerNorm`` or a class named ``*Norm``: RMSNorm variants),
    so Gemma 3's per-head q/k norms count as norms too. Tied weights appear once.
    """
    from torch import nn

    keep: list[str] = []
    output = model.get_output_embeddings()
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("Norm")
        if isinstance(module, nn.Embedding) or is_norm or module is output:
            prefix = f"{module_name}." if module_name else ""
            keep.extend(prefix + name for name, _ in module.named_parameters(recurse=False))
    names = {name for name, _ in model.named_parameters()}  # drops tied duplicates
    return [name for name in dict.fromkeys(keep) if name in names]


def untrained_model(model: nn.Module, mode: str, seed: int = 0) -> nn.Module:
    """A new model of ``model``'s architecture and config with freshly initialised weights.

    ``mode="no_training"``: every weight from the architecture's own initialisation, seeded
    (the global RNG is left as it was). ``"trained_embeddings"``: the same, then the tensors of
    :func:`trained_embedding_names` copied from ``model``. Eager attention, eval mode, the
    model's dtype and placement (a ``device_map``-split model is dispatched the same way). It
    costs a second copy of the model in memory.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if mode not in UNTRAINED_MODES:
        raise ValueError(f"unknown untrained-model mode {mode!r}: use one of {', '.join(UNTRAINED_MODES)}")
    config = copy.deepcopy(model.config)
    dtype = next(model.parameters()).dtype
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=dtype)
    if mode == "trained_embeddings":
        trained = dict(model.named_parameters())
        params = dict(fresh.named_parameters())
        with torch.no_grad():
            for name in trained_embedding_names(model):
                params[name].copy_(trained[name].detach().to(params[name].device))
    device_map = getattr(model, "hf_device_map", None)
    if device_map and len(set(device_map.values())) > 1:
        from accelerate import dispatch_model

        fresh = dispatch_model(fresh, device_map=device_map)
    else:
        fresh = fresh.to(next(model.parameters()).device)
    return fresh.eval()


# ---------------------------------------------------------------------------------------------
# demonstrations: shuffled labels, permuted order


def _derived_hash(task: IclTask, what: str) -> str:
    return hashlib.sha256(f"{task.config_hash}|{what}".encode()).hexdigest()[: max(16, len(task.config_hash))]


def shuffled_label_task(task: IclTask, seed: int) -> IclTask:
    """``task`` with the demonstrations' labels permuted so that every label changes where it can.

    How: the demonstrations are shuffled (seeded), stably sorted by gold index, and each takes the
    gold index of the one m places further on (cyclically), m being the size of the largest
    label class. Sorted blocks of equal labels are at most m long, so when no label holds more
    than half the demonstrations every label changes and the label counts are kept (a
    permutation, not random labels). A demonstration whose label is still unchanged (one class
    over half) or whose own choices lack the borrowed index (per-example choice lists) gets a
    different choice of its own, uniformly; only one whose choices are all the same text keeps
    its label. Texts, choices, eval examples and the order are unchanged.
    """
    demos = task.demonstrations
    rng = random.Random(seed)
    order = list(range(len(demos)))
    rng.shuffle(order)
    order.sort(key=lambda i: demos[i].gold)
    m = max((sum(d.gold == g for d in demos) for g in {d.gold for d in demos}), default=0)
    new_gold = {i: demos[order[(pos + m) % len(order)]].gold for pos, i in enumerate(order)}
    shuffled = []
    for i, demo in enumerate(demos):
        gold = new_gold[i]
        if gold >= len(demo.choices) or demo.choices[gold] == demo.answer:
            others = [c for c, text in enumerate(demo.choices) if text != demo.answer]
            gold = rng.choice(others) if others else demo.gold
        shuffled.append(replace(demo, gold=gold))
    return replace(task, demonstrations=tuple(shuffled), config_hash=_derived_hash(task, f"shuffled-labels:{seed}"))


def permuted_task(task: IclTask, seed: int) -> IclTask:
    """``task`` with its demonstrations in another (seeded) order, for ICL and FT alike (Shen's order sensitivity)."""
    demos = list(task.demonstrations)
    random.Random(seed).shuffle(demos)
    return replace(task, demonstrations=tuple(demos), config_hash=_derived_hash(task, f"permuted:{seed}"))


# ---------------------------------------------------------------------------------------------
# running a control


def run_control(
    name: str,
    model: nn.Module,
    tokenizer,
    task: IclTask,
    base: Records,
    *,
    batch_size: int = 16,
    seed: int = 0,
    base_analysis: Analysis | None = None,
    margin: float = 0.0,
    n_boot: int = 1000,
    progress: Callable[[str, int, int], None] | None = None,
) -> ControlResult:
    """Run control ``name`` (one of :data:`RUNNABLE`) beside the real run ``base`` of ``task``.

    Every control run goes through ``runs.run_settings`` and ``analysis.analyse`` with the task's
    analysis seed, as the real run does, so the random baselines and bootstrap rows are the
    same (pass the real run's ``n_boot`` too). ``seed`` seeds the control itself (the
    re-initialisation, the label permutation). ``base_analysis`` saves re-analysing ``base``
    when the caller has it.
    """
    from pytest_icl.engine import runs
    from pytest_icl.analysis.aggregate import analyse

    if name not in RUNNABLE:
        hint = " (use summarise_seeds over the S analyses)" if name == "seeds" else (
            " (its numbers are in every analysis: kl_icl_ft, top10_icl_ft, ...)" if name == "output" else ""
        )
        raise ValueError(f"run_control runs {', '.join(RUNNABLE)}; not {name!r}{hint}")
    analysis_seed = task.settings.seed
    if base_analysis is None:
        base_analysis = analyse(base, seed=analysis_seed, n_boot=n_boot)
    common = dict(batch_size=batch_size, progress=progress)
    analyses: dict[str, Analysis] = {}
    seconds: dict[str, float] = {}

    def timed(variant: str, run: Callable[[], Records]) -> None:
        start = time.perf_counter()
        analyses[variant] = analyse(run(), seed=analysis_seed, n_boot=n_boot)
        seconds[variant] = time.perf_counter() - start

    if name == "untrained":
        for mode in UNTRAINED_MODES:
            def run(mode=mode):
                control_model = untrained_model(model, mode, seed=seed)
                try:
                    return runs.run_settings(control_model, tokenizer, task, **common)
                finally:
                    del control_model

            timed(mode, run)
    elif name == "shuffled":
        shuffled = shuffled_label_task(task, seed)
        timed("shuffled", lambda: runs.run_settings(model, tokenizer, task, ft_task=shuffled, reuse=base, **common))
        if not _same_token_lengths(task, shuffled, tokenizer):
            _undefine(analyses["shuffled"], "kendall")
    else:
        timed("lcgd", lambda: runs.run_settings(model, tokenizer, task, ft_objective="lcgd", reuse=base, **common))
    return ControlResult(name, analyses, seconds, check_control(name, base_analysis, analyses, margin=margin))


def _same_token_lengths(task: IclTask, other: IclTask, tokenizer) -> bool:
    """Whether every demonstration of ``other`` has as many training tokens as ``task``'s.

    Kendall(ICL, FT) pairs ICL's demonstration token t with FT's training token t; when a
    shuffled label tokenises to another length, the pairs after it are different tokens.
    """
    from pytest_icl.engine.encoding import encode_demonstrations

    lengths = [[len(s) for s in encode_demonstrations(t, tokenizer).sequences] for t in (task, other)]
    return lengths[0] == lengths[1]


def _undefine(analysis: Analysis, metric: str) -> None:
    analysis.values[metric] = math.nan
    analysis.intervals[metric] = (math.nan, math.nan)
    if metric in analysis.layers:
        analysis.layers[metric] = [math.nan] * len(analysis.layers[metric])


# ---------------------------------------------------------------------------------------------
# seeds and order sensitivity (Deutch's 3 seeds, Shen §12.2)


def _mean_sd(values: list[float]) -> dict:
    finite = [v for v in values if not math.isnan(v)]
    mean = statistics.fmean(finite) if finite else math.nan
    sd = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return {"mean": mean, "sd": sd, "n": len(finite), "values": list(values)}


def summarise_seeds(analyses: list[Analysis], records: list[Records] | None = None) -> dict:
    """Mean ± sd over S analyses of the same task (demonstration seeds or permutations), and order sensitivity.

    Returns ``{"runs": S, "metrics": {name: {"mean", "sd", "n", "values"}}, "order_sensitivity": {...}}``.
    sd is the sample standard deviation (S − 1), over the runs where the value is defined; NaN
    for fewer than two. ``order_sensitivity`` (Shen et al.: ICL's predictions depend on the
    demonstrations' order far more than GD's):

    * ``acc_sd``: per setting (zsl, icl, ft), the sd of accuracy across runs;
    * with ``records`` (the S runs' records, same eval examples in the same order, as with
      permutations of one demonstration set): ``prediction_flips`` — per setting, the share
      of eval examples whose prediction is not the same in every run; ``choice_prob_sd`` — per
      setting, the sd across runs of the probabilities over the answer choices, averaged over
      choices and examples; ``icl_over_ft`` — choice_prob_sd of ICL / FT. When the runs' gold
      labels differ (another seed picked other eval examples) these are NaN, ``aligned`` False.
    """
    if not analyses:
        raise ValueError("summarise_seeds needs at least one analysis")
    names = [k for k in analyses[0].values if all(k in a.values for a in analyses)]
    summary = {
        "runs": len(analyses),
        "metrics": {name: _mean_sd([a.values[name] for a in analyses]) for name in names},
    }
    sensitivity: dict = {
        "acc_sd": {s: _mean_sd([a.values.get(f"acc_{s}", math.nan) for a in analyses])["sd"] for s in ("zsl", "icl", "ft")}
    }
    if records is not None:
        sensitivity.update(_prediction_spread(records))
    summary["order_sensitivity"] = sensitivity
    return summary


def _prediction_spread(records: list[Records]) -> dict:
    import torch

    settings = ("zsl", "icl", "ft")
    aligned = len(records) > 1 and all(torch.equal(r.gold, records[0].gold) for r in records)
    if not aligned:
        nan = {s: math.nan for s in settings}
        return {"aligned": False, "prediction_flips": nan, "choice_prob_sd": dict(nan), "icl_over_ft": math.nan}
    flips, prob_sd = {}, {}
    for s in settings:
        predictions = torch.stack([getattr(r, s).predictions for r in records])  # [S, n]
        flips[s] = float((predictions != predictions[0]).any(dim=0).double().mean())
        logprobs = torch.stack([getattr(r, s).logprobs.double() for r in records])  # [S, n, choices], -inf pads
        spread = logprobs.softmax(-1).std(dim=0)  # [n, choices]
        prob_sd[s] = float(spread[torch.isfinite(logprobs[0])].mean())  # over each example's real choices
    ratio = prob_sd["icl"] / prob_sd["ft"] if prob_sd["ft"] > 0 else (math.nan if prob_sd["icl"] == 0 else math.inf)
    return {"aligned": True, "prediction_flips": flips, "choice_prob_sd": prob_sd, "icl_over_ft": ratio}
