"""Controls (definitions §12.1, definitions §12.2, definitions §12.4): untrained models, shuffled labels, the check table, the
runner's orchestration, and the seed summary."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from pytest_icl.analysis.aggregate import Analysis
from pytest_icl.controls import base as controls
from pytest_icl.controls.base import CONTROL_CHECKS, check_control, run_control
from pytest_icl.controls.seeds import permuted_task, summarise_seeds
from pytest_icl.controls.shuffled import shuffled_label_task
from pytest_icl.controls.untrained import trained_embedding_names, untrained_model
from pytest_icl.tasks.loading import Example, IclTask, TaskSettings
from tests.tiny_models import make_tiny_model

# ------------------------------------------------------------------------------------------
# untrained models

EXPECTED_KEPT = {
    "llama": ["model.embed_tokens.weight"]
    + [f"model.layers.{i}.{n}.weight" for i in range(2) for n in ("input_layernorm", "post_attention_layernorm")]
    + ["model.norm.weight", "lm_head.weight"],
    # GPT-2 ties lm_head to wte, so the unembedding is wte itself.
    "gpt2": ["transformer.wte.weight", "transformer.wpe.weight"]
    + [f"transformer.h.{i}.{n}.{w}" for i in range(2) for n in ("ln_1", "ln_2") for w in ("weight", "bias")]
    + ["transformer.ln_f.weight", "transformer.ln_f.bias"],
}


def _pretend_trained(model):
    """Move every weight away from its initial value (norms start at 1 in a fresh model too)."""
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1 + 0.05)
    return model


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_trained_embedding_names_are_embeddings_norms_and_unembedding(arch):
    model, _ = make_tiny_model(arch)
    assert sorted(trained_embedding_names(model)) == sorted(EXPECTED_KEPT[arch])


def test_trained_embedding_names_include_gemma3_q_and_k_norms():
    model, _ = make_tiny_model("gemma3")
    names = trained_embedding_names(model)
    assert "model.layers.0.self_attn.q_norm.weight" in names and "model.layers.2.self_attn.k_norm.weight" in names
    assert not any("proj" in n or "mlp" in n for n in names)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
def test_untrained_models_are_fresh_inits_with_only_the_named_tensors_kept(arch):
    trained = _pretend_trained(make_tiny_model(arch, seed=0)[0])
    fresh = dict(make_tiny_model(arch, seed=3)[0].named_parameters())
    rng = torch.get_rng_state()
    no_training = untrained_model(trained, "no_training", seed=3)
    embeddings = untrained_model(trained, "trained_embeddings", seed=3)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is left alone
    kept = set(trained_embedding_names(trained))
    trained_params = dict(trained.named_parameters())
    for model in (no_training, embeddings):
        assert not model.training and model.config._attn_implementation == "eager"
        assert next(model.parameters()).dtype == torch.float32
    for name, p in no_training.named_parameters():
        assert torch.equal(p, fresh[name]), name
        assert not torch.equal(p, trained_params[name]), name
    for name, p in embeddings.named_parameters():
        assert torch.equal(p, trained_params[name] if name in kept else fresh[name]), name
    assert kept and len(kept) < len(trained_params)


def test_untrained_model_rejects_an_unknown_mode():
    model, _ = make_tiny_model("gpt2")
    with pytest.raises(ValueError, match="no_training, trained_embeddings"):
        untrained_model(model, "random")


# ------------------------------------------------------------------------------------------
# shuffled labels, permuted order


def _task(golds, choices=("red", "blue", "green")) -> IclTask:
    demos = tuple(Example(f"Text {i}:", choices if isinstance(choices[0], str) else choices[i], g) for i, g in enumerate(golds))
    return IclTask(
        name="t",
        description="D.\n",
        target_delimiter=" ",
        fewshot_delimiter="\n",
        demonstrations=demos,
        eval_examples=(Example("Q:", ("red", "blue", "green"), 1),),
        settings=TaskSettings(shots=len(golds)),
        config_hash="abc123",
    )


def _same_except_labels(task, shuffled):
    assert [d.text for d in shuffled.demonstrations] == [d.text for d in task.demonstrations]
    assert [d.choices for d in shuffled.demonstrations] == [d.choices for d in task.demonstrations]
    assert (shuffled.eval_examples, shuffled.settings, shuffled.description) == (task.eval_examples, task.settings, task.description)
    assert shuffled.config_hash != task.config_hash


@pytest.mark.parametrize("golds", [[0, 1, 0, 1, 1, 0, 0, 1], [0, 0, 1, 1, 2, 2, 2], [2, 0, 1, 0, 0, 1]])
def test_shuffled_labels_change_every_label_and_keep_the_label_counts(golds):
    task = _task(golds)
    for seed in range(4):
        shuffled = shuffled_label_task(task, seed)
        _same_except_labels(task, shuffled)
        new = [d.gold for d in shuffled.demonstrations]
        assert all(a != b for a, b in zip(golds, new))
        assert Counter(new) == Counter(golds)  # a permutation of the labels, not random labels
        assert shuffled_label_task(task, seed) == shuffled  # seeded
    assert len({tuple(d.gold for d in shuffled_label_task(_task([0, 0, 1, 1, 2, 2, 2]), s).demonstrations) for s in range(6)}) > 1


def test_shuffled_labels_where_a_permutation_cannot_change_every_label():
    # Five of six say red: no permutation moves them all, so the rest get another choice of their own.
    task = _task([0, 0, 0, 0, 0, 1])
    assert all(d.gold != 0 for d in shuffled_label_task(task, 0).demonstrations[:5])
    # Per-example choice lists: a borrowed index beyond an example's choices, and a demo with one choice.
    per_example = _task([2, 0, 1, 0], choices=[("a", "b", "c"), ("d", "e"), ("f", "g"), ("only",)])
    new = shuffled_label_task(per_example, 1)
    _same_except_labels(per_example, new)
    golds = [d.gold for d in new.demonstrations]
    assert golds[3] == 0 and all(g != old for g, old in zip(golds[:3], [2, 0, 1]))
    assert all(g < len(d.choices) for g, d in zip(golds, new.demonstrations))


def test_permuted_task_reorders_the_same_demonstrations():
    task = _task([0, 1, 2, 0, 1, 2, 0, 1])
    orders = {permuted_task(task, s).demonstrations for s in range(4)}
    assert all(sorted(o, key=lambda d: d.text) == sorted(task.demonstrations, key=lambda d: d.text) for o in orders)
    assert len(orders) > 1 and permuted_task(task, 0).config_hash != task.config_hash


def test_ft_on_labels_of_other_token_lengths_is_marked_unaligned():
    from pytest_icl.engine.runs import run_settings

    model, tokenizer = make_tiny_model("llama")
    for choices, aligned in ((("positive", "negative"), True), (("red", "blue"), False)):  # one token each; two and three
        task = dataclasses.replace(_task([0, 1, 0, 1], choices=choices), settings=TaskSettings(shots=4, lr=0.1))
        base = run_settings(model, tokenizer, task, batch_size=8)
        control = run_settings(model, tokenizer, task, ft_task=shuffled_label_task(task, 0), reuse=base, batch_size=8)
        assert base.ft_aligned and control.ft_aligned is aligned


# ------------------------------------------------------------------------------------------
# the check table


def _analysis(**values) -> Analysis:
    return Analysis(values=values, intervals={}, layers={}, counts={})


def _evidence(**means) -> Analysis:
    """An analysis over 2 draws × 40 examples whose per-example values scatter (sd 0.05) around each mean."""
    g = torch.Generator().manual_seed(7)
    evidence = {name: [mean + 0.05 * torch.randn(40, generator=g, dtype=torch.float64) for _ in range(2)] for name, mean in means.items()}
    return Analysis(values=dict(means), intervals={}, layers={}, counts={}, evidence=evidence)


def test_control_checks_cover_every_control_but_seeds_and_name_real_metrics():
    assert {c.control for c in CONTROL_CHECKS} == set(controls.CONTROLS) - {"seeds"}
    analysis_keys = {"simaou", "simaou_unnormalised", "simam_delta", "kendall", "kl_icl_ft", "kl_icl_ft_shuffled", "top10_icl_ft",
                     "top10_icl_ft_shuffled"}  # fmt: skip
    assert {c.metric for c in CONTROL_CHECKS} | {c.control_metric for c in CONTROL_CHECKS} <= analysis_keys
    assert all(c.better is None for c in CONTROL_CHECKS if c.control == "lcgd")


def test_check_control_decides_each_check_by_the_interval_rule():
    base = _evidence(simaou=0.2, simam_delta=0.1, kl_icl_ft=0.3, kl_icl_ft_shuffled=0.5, top10_icl_ft=0.6, top10_icl_ft_shuffled=0.7)
    controls_ = {"no_training": _evidence(simaou=0.1, simam_delta=0.15), "trained_embeddings": _evidence(simaou=0.2)}
    outcomes = check_control("untrained", base, controls_)
    verdicts = {(o.check.variant, o.check.metric): o.outcome for o in outcomes}
    assert verdicts == {
        ("no_training", "simaou"): "passed",  # +0.1, well clear of 0
        ("no_training", "simam_delta"): "failed",
        ("trained_embeddings", "simaou"): "undecided",  # the same mean: the interval straddles 0
        ("trained_embeddings", "simam_delta"): None,  # no evidence for it
    }
    assert "failed" in outcomes[1].message and "no_training run" in outcomes[1].message and "95% CI" in outcomes[1].message
    low, high = outcomes[0].decision.interval
    assert low > 0 and outcomes[0].as_dict()["low"] == low and outcomes[0].as_dict()["outcome"] == "passed"
    # output: real FT against shuffled-label FT (closer to ICL in KL, but fewer shared top-10 tokens here)
    out = {o.check.metric: o for o in check_control("output", base, {})}
    assert out["kl_icl_ft"].outcome == "passed" and out["top10_icl_ft"].outcome == "failed"
    assert out["kl_icl_ft"].check.control_metric == "kl_icl_ft_shuffled"
    assert check_control("output", base, {}, margin=0.5)[0].outcome == "failed"  # 0.5 − 0.3 is clearly below 0.5
    lcgd = check_control("lcgd", base, {"lcgd": _evidence(simaou=0.3, simaou_unnormalised=0.1, simam_delta=0.2)})
    assert [o.outcome for o in lcgd] == [None] * 3 and "reported" in lcgd[0].message


def test_judge_combines_the_checks_and_says_what_a_missing_control_needs():
    output = controls.get("output")
    passed = check_control("output", _evidence(kl_icl_ft=0.1, kl_icl_ft_shuffled=0.5, top10_icl_ft=0.8, top10_icl_ft_shuffled=0.4), {})
    assert output.judge(passed).outcome == "passed" and output.judge(passed).passed
    mixed = check_control("output", _evidence(kl_icl_ft=0.1, kl_icl_ft_shuffled=0.5, top10_icl_ft=0.4, top10_icl_ft_shuffled=0.4), {})
    assert output.judge(mixed).outcome == "undecided" and not output.judge(mixed).passed
    missing = output.judge(check_control("output", _evidence(kl_icl_ft=0.1, top10_icl_ft=0.4), {}))
    assert missing.outcome == "inconclusive" and "--icl-shuffled on" in missing.message
    assert controls.get("lcgd").judge(passed) is None


# ------------------------------------------------------------------------------------------
# the runner's orchestration (run_settings and analyse stand-ins)


def test_run_control_runs_beside_every_draw_and_passes_the_contract_arguments(monkeypatch):
    model, tokenizer = make_tiny_model("gpt2")
    tasks = [dataclasses.replace(_task([0, 1, 0, 1]), settings=TaskSettings(shots=4, seed=seed)) for seed in (1, 2)]
    draws = [SimpleNamespace(name="draw1", zsl="zsl-of-draw1"), SimpleNamespace(name="draw2")]
    calls = []

    def fake_run_settings(run_model, run_tokenizer, run_task, **kwargs):
        calls.append((run_model, run_task, kwargs))
        return SimpleNamespace(name=f"run{len(calls)}", zsl=f"zsl{len(calls)}")

    means = {"run1": 0.1, "run3": 0.4, "run5": 0.1}  # the first run of each variant names its analysis
    monkeypatch.setattr("pytest_icl.engine.runs.run_settings", fake_run_settings)
    monkeypatch.setattr(
        "pytest_icl.analysis.draws.analyse_draws",
        lambda made, seed, n_boot: _evidence(simaou=means.get(made[0].name, 0.2), simam_delta=0.0, kendall=0.0, simaou_unnormalised=0.0),
    )
    base = _evidence(simaou=0.3, simam_delta=0.0, kendall=0.0, simaou_unnormalised=0.0)
    shuffled = run_control("shuffled", model, tokenizer, tasks, draws, batch_size=4, seed=1, base_analysis=base, n_boot=200)
    assert [kw["reuse"] for _, _, kw in calls] == draws and all(m is model and kw["batch_size"] == 4 for m, _, kw in calls)
    # draw s trains on its own demonstrations with labels shuffled by seed + s, as the default run's control does
    assert [kw["ft_task"] for _, _, kw in calls] == [shuffled_label_task(tasks[0], 1), shuffled_label_task(tasks[1], 2)]
    assert shuffled.outcomes[0].outcome == "passed" and set(shuffled.seconds) == {"shuffled"}  # 0.3 vs 0.1

    calls.clear()
    lcgd = run_control("lcgd", model, tokenizer, tasks, draws, batch_size=4, seed=1, base_analysis=base)
    assert [kw["ft_objective"] for _, _, kw in calls] == ["lcgd"] * 2 and "lcgd" in lcgd.analyses

    calls.clear()
    untrained = run_control("untrained", model, tokenizer, tasks, draws, batch_size=4, seed=1, base_analysis=base, n_boot=200)
    assert len(calls) == 4 and all(m is not model and "reuse" not in kw and "ft_task" not in kw for m, _, kw in calls)
    assert [t for _, t, _ in calls] == tasks * 2  # one untrained model per mode, beside both draws
    assert [kw["zsl"] for _, _, kw in calls] == [None, "zsl1", None, "zsl3"]  # its ZSL scored once per mode
    assert set(untrained.analyses) == {"no_training", "trained_embeddings"}
    assert [o.outcome for o in untrained.outcomes if o.check.metric == "simaou"] == ["passed", "failed"]  # 0.3 vs 0.1, vs 0.4

    with pytest.raises(ValueError, match="run_control runs"):
        run_control("seeds", model, tokenizer, tasks, draws)


def test_run_control_end_to_end_on_a_tiny_model():
    from pytest_icl.analysis.draws import analyse_draws
    from pytest_icl.engine.runs import run_settings

    model, tokenizer = make_tiny_model("llama")
    words = ["hot", "cold", "up", "down", "big", "small", "fast", "slow", "wet", "dry"]
    examples = [Example(f"Word: {w}\nAntonym:", ("yes", "no"), i % 2) for i, w in enumerate(words)]
    task = dataclasses.replace(
        _task([0]), demonstrations=tuple(examples[:4]), eval_examples=tuple(examples[4:]), settings=TaskSettings(shots=4, lr=0.1)
    )
    base = run_settings(model, tokenizer, task, batch_size=8)
    base_analysis = analyse_draws([base], seed=task.settings.seed, n_boot=50)
    for name in ("shuffled", "lcgd"):
        result = run_control(name, model, tokenizer, task, base, batch_size=8, seed=0, base_analysis=base_analysis, n_boot=50)
        (control,) = result.analyses.values()
        assert control.values["acc_icl"] == base_analysis.values["acc_icl"]  # ICL reused, only FT differs
        assert control.values["simaou"] != base_analysis.values["simaou"]
        assert result.outcomes and all(o.value == base_analysis.values[o.check.metric] for o in result.outcomes)
        assert all(o.outcome in (None, "passed", "failed", "undecided") for o in result.outcomes)
        assert all(o.decision is not None for o in result.outcomes if o.check.better is not None)


# ------------------------------------------------------------------------------------------
# seeds


def _records(predictions, logprobs, gold):
    setting = lambda p, lp: SimpleNamespace(predictions=torch.tensor(p), logprobs=torch.tensor(lp))  # noqa: E731
    return SimpleNamespace(
        gold=torch.tensor(gold),
        zsl=setting(predictions[0], logprobs[0]),
        icl=setting(predictions[1], logprobs[1]),
        ft=setting(predictions[2], logprobs[2]),
    )


def test_summarise_seeds_mean_sd_and_order_sensitivity():
    per_draw = {"simaou": [0.1, 0.2, 0.3], "acc_zsl": [0.5] * 3, "acc_icl": [0.7, 0.9, 0.8], "acc_ft": [0.6] * 3,
                 "rec2ftp": [math.nan, 0.5, 0.7]}  # fmt: skip
    summary = summarise_seeds(per_draw)
    assert summary["runs"] == 3
    assert summary["metrics"]["simaou"]["mean"] == pytest.approx(0.2) and summary["metrics"]["simaou"]["sd"] == pytest.approx(0.1)
    assert summary["metrics"]["rec2ftp"]["n"] == 2 and summary["metrics"]["rec2ftp"]["mean"] == pytest.approx(0.6)
    assert summary["order_sensitivity"]["acc_sd"] == {"zsl": 0.0, "icl": pytest.approx(0.1), "ft": 0.0}

    ln = math.log
    same = [[ln(0.8), ln(0.2)], [ln(0.8), ln(0.2)]]
    runs = [
        # zsl never moves; ICL flips example 1 in the second run; FT moves its probabilities but not its predictions
        _records([[0, 0], [0, 1], [0, 0]], [same, [[ln(0.9), ln(0.1)], [ln(0.6), ln(0.4)]], same], [0, 1]),
        _records([[0, 0], [0, 0], [0, 0]], [same, [[ln(0.9), ln(0.1)], [ln(0.4), ln(0.6)]], [[ln(0.7), ln(0.3)]] * 2], [0, 1]),
    ]
    first_two = {name: values[:2] for name, values in per_draw.items()}
    spread = summarise_seeds(first_two, runs)["order_sensitivity"]
    assert spread["aligned"] and spread["prediction_flips"] == {"zsl": 0.0, "icl": 0.5, "ft": 0.0}
    # ICL: example 1 moves by 0.2 (sd 0.1414 on both choices), example 0 not at all -> mean 0.0707;
    # FT: both examples move by 0.1 -> sd 0.0707 everywhere.
    assert spread["choice_prob_sd"]["zsl"] == 0.0
    assert spread["choice_prob_sd"]["icl"] == pytest.approx(0.2 / math.sqrt(2) / 2)
    assert spread["icl_over_ft"] == pytest.approx(1.0)
    misaligned = summarise_seeds(first_two, [runs[0], _records([[0], [0], [0]], [[same[0]]] * 3, [1])])
    assert misaligned["order_sensitivity"]["aligned"] is False and math.isnan(misaligned["order_sensitivity"]["icl_over_ft"])
    with pytest.raises(ValueError):
        summarise_seeds({})


def _pair(verdicts: dict[str, str], draws: int = 2):
    from pytest_icl.controls.base import PairRun

    ln = math.log
    same = [[ln(0.8), ln(0.2)], [ln(0.8), ln(0.2)]]
    records = [_records([[0, 0], [0, 1], [0, 0]], [same] * 3, [0, 1]) for _ in range(draws)]
    per_draw = {"acc_icl": [0.7, 0.9][:draws], "simaou": [0.1, 0.3][:draws]}
    analysis = Analysis(values={}, intervals={}, layers={}, counts={}, per_draw=per_draw)
    stub = {name: SimpleNamespace(outcome=o, estimate=0.1, interval=(0.05, 0.15)) for name, o in verdicts.items()}
    tasks = tuple(dataclasses.replace(_task([0, 1]), settings=TaskSettings(shots=2, seed=1 + s)) for s in range(draws))
    return PairRun(None, None, tasks, tuple(records), analysis, margins={}, verdicts=stub)


@pytest.mark.parametrize(
    ("outcomes", "draws", "expected"),
    [
        ({"rec2ftp": "passed", "simaou": "passed", "simam": "passed", "kendall": "passed"}, 2, "passed"),
        ({"rec2ftp": "inconclusive", "simaou": "passed", "simam": "passed", "kendall": "passed"}, 2, "passed"),
        ({"rec2ftp": "passed", "simaou": "undecided", "simam": "passed", "kendall": "passed"}, 2, "undecided"),
        ({"rec2ftp": "passed", "simaou": "undecided", "simam": "failed", "kendall": "passed"}, 2, "failed"),
        ({"rec2ftp": "inconclusive", "simaou": "inconclusive", "simam": "inconclusive", "kendall": "inconclusive"}, 2, "inconclusive"),
        ({"rec2ftp": "passed", "simaou": "passed", "simam": "passed", "kendall": "passed"}, 1, "inconclusive"),
    ],
)
def test_the_seeds_item_reads_the_gated_properties_over_the_pairs_draws(outcomes, draws, expected):
    verdict, entry = controls.get("seeds").run(_pair(outcomes, draws))
    assert verdict.outcome == expected and entry["verdict"]["outcome"] == expected
    assert entry["seeds"] == [1, 2][:draws] and entry["metrics"]["simaou"]["mean"] == pytest.approx(0.2 if draws == 2 else 0.1)
    assert "simaou " + outcomes["simaou"] in verdict.message
    if draws == 1:
        assert "--icl-seeds 2" in verdict.message


def test_the_shuffled_item_reuses_the_default_runs_shuffled_label_ft():
    from pytest_icl.analysis.draws import SHUFFLED_METRICS

    means = {m: 0.3 for m in SHUFFLED_METRICS} | {m + "_shuffled": 0.1 for m in SHUFFLED_METRICS}
    analysis = _evidence(**means)
    analysis.intervals.update({name: (0.0, 1.0) for name in means})
    pair = SimpleNamespace(analysis=analysis)
    (view,) = controls.get("shuffled").ready(pair).values()
    assert view.values["simaou"] == 0.1 and view.evidence["kendall"] is analysis.evidence["kendall_shuffled"]
    outcomes = check_control("shuffled", analysis, {"shuffled": view}, n_boot=200)
    assert [o.outcome for o in outcomes] == ["passed"] * 3
    assert controls.get("shuffled").ready(SimpleNamespace(analysis=_evidence(simaou=0.3))) == {}  # control off: it trains its own
