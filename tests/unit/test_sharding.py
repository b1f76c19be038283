"""pytest_icl.sharding: I/N from the flag or the environment, and whole model × task pairs to shards."""

from __future__ import annotations

import itertools
import random

import pytest

from pytest_icl.errors import OptionError
from pytest_icl.sharding import Shard, assign, fingerprint, model_loads, parse_shard, plan, resolve_shard, select

MODELS = ("gemma", "llama", "qwen")
PAIRS = [(model, f"task{t:02d}") for model in MODELS for t in range(7)]  # 21 pairs


# ---- where the shard comes from


def test_parse_i_of_n_is_zero_based():
    assert parse_shard("0/4") == Shard(0, 4)
    assert parse_shard(" 3 / 4 ") == Shard(3, 4)
    assert str(parse_shard("2/5")) == "2/5"


@pytest.mark.parametrize(
    ("text", "says"),
    [("4/4", "outside 0…3"), ("-1/4", "outside 0…3"), ("1/0", "at least 1"), ("a/4", "whole number"), ("1-4", "expected I/N")],
)
def test_bad_shards_say_what_to_write(text, says):
    with pytest.raises(OptionError, match=says) as error:
        parse_shard(text)
    assert "--icl-shard" in str(error.value) and "\n" not in str(error.value)


def test_the_flag_wins_over_the_environment():
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert resolve_shard("0/1", env) == Shard(0, 1)  # 0/1 turns the array's sharding off
    assert resolve_shard(None, env) == Shard(3, 4, "SLURM_ARRAY_TASK_ID=3")


def test_slurm_arrays_that_start_at_one_or_step_map_to_0_to_n_minus_1():
    assert resolve_shard(None, {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}).index == 0
    stepped = {"SLURM_ARRAY_TASK_ID": "20", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "10"}
    assert resolve_shard(None, stepped) == Shard(2, 4, "SLURM_ARRAY_TASK_ID=20")
    with pytest.raises(OptionError, match="not on the array's grid"):
        resolve_shard(None, {**stepped, "SLURM_ARRAY_TASK_ID": "15"})


def test_kubernetes_index_needs_the_count_from_the_flag():
    env = {"JOB_COMPLETION_INDEX": "2"}
    assert resolve_shard(None, env) is None  # no count: not sharded, every pair runs
    assert resolve_shard("3", env) == Shard(2, 3, "JOB_COMPLETION_INDEX=2")
    with pytest.raises(OptionError, match="outside 0…1"):
        resolve_shard("2", env)
    with pytest.raises(OptionError, match="neither is set"):
        resolve_shard("3", {})


def test_no_flag_no_environment_is_not_sharded():
    assert resolve_shard(None, {}) is None
    assert resolve_shard(None, {"SLURM_ARRAY_TASK_ID": "1"}) is None  # no count


# ---- the assignment


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 8, 21, 30])
def test_every_pair_goes_to_exactly_one_shard_and_shards_are_balanced(count):
    shards = plan(PAIRS, count)
    flat = [pair for run in shards for pair in run]
    assert sorted(flat) == sorted(PAIRS) and len(flat) == len(set(flat))
    sizes = [len(run) for run in shards]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("count", [2, 3, 4, 6])
def test_each_shard_holds_each_of_its_models_as_one_group_and_loads_stay_few(count):
    for index, run in enumerate(plan(PAIRS, count)):
        mine = select(PAIRS, Shard(index, count))
        assert set(mine) == set(run)
        models = [model for model, _ in mine]
        assert models == sorted(models, key=models.index)  # each model's pairs are consecutive: loaded once
    assert model_loads(plan(PAIRS, count)) <= len(MODELS) + count - 1


def test_the_assignment_is_the_same_in_any_order_and_with_duplicates():
    reference = assign(PAIRS, 4)
    rng = random.Random(0)
    for _ in range(20):
        shuffled = PAIRS[:]
        rng.shuffle(shuffled)
        assert assign(shuffled + shuffled[:3], 4) == reference
        assert fingerprint(shuffled) == fingerprint(PAIRS)
    for index in range(4):
        assert set(select(list(reversed(PAIRS)), Shard(index, 4))) == {p for p, i in reference.items() if i == index}


def test_select_keeps_the_given_order_within_a_model():
    given = [("m", "b"), ("n", "x"), ("m", "a")]
    assert select(given, None) == [("m", "b"), ("m", "a"), ("n", "x")]


def test_more_shards_than_pairs_leaves_some_empty():
    shards = plan(PAIRS[:2], 4)
    assert [len(run) for run in shards] == [0, 1, 0, 1]


def test_a_different_pair_set_has_a_different_fingerprint():
    assert fingerprint(PAIRS) != fingerprint(PAIRS[:-1])
    assert len(fingerprint(PAIRS)) == 16


def test_small_exhaustive_orders_agree():
    pairs = [("a", "1"), ("a", "2"), ("b", "1"), ("c", "9")]
    results = {tuple(sorted(assign(order, 3).items())) for order in itertools.permutations(pairs)}
    assert len(results) == 1
