"""Worker GPU pinning and xdist scopes, on CPU with fake visible-device lists."""

import sys
import types

import pytest

from pytest_icl.plugin.scheduling import (
    SchedulingError,
    given_dist,
    make_scheduler,
    parse_dist_mode,
    pin_worker,
    scope_of,
    visible_devices,
    worker_devices,
    worker_position,
)


def _no_driver():
    return None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3,5,7,9", ["3", "5", "7", "9"]),
        (" 1 , 0 ", ["1", "0"]),
        ("", []),
        ("-1", []),
        ("0,-1,2", ["0"]),  # CUDA stops at the first invalid entry
        ("GPU-8f1c2b3a-aaaa,MIG-12ab", ["GPU-8f1c2b3a-aaaa", "MIG-12ab"]),
    ],
)
def test_visible_devices_reads_cuda_visible_devices(value, expected):
    assert visible_devices({"CUDA_VISIBLE_DEVICES": value}, count=lambda: 99) == expected


def test_visible_devices_without_the_variable_counts_without_cuda():
    assert visible_devices({}, count=lambda: 3) == ["0", "1", "2"]
    assert visible_devices({}, count=_no_driver) is None
    assert visible_devices({}, count=lambda: 0) == []


def test_nvml_count_on_this_machine_is_none_or_a_list_and_starts_no_cuda():
    found = visible_devices({})  # real NVML probe: no driver here gives None
    assert found is None or all(entry.isdigit() for entry in found)
    torch = sys.modules.get("torch")
    assert torch is None or not torch.cuda.is_initialized()


def test_worker_slices_of_the_callers_visible_list():
    visible = visible_devices({"CUDA_VISIBLE_DEVICES": "3,5,7,9"})
    assert worker_devices(0, 2, 2, visible) == ["3", "5"]
    assert worker_devices(1, 2, 2, visible) == ["7", "9"]
    assert [worker_devices(i, 4, 1, visible) for i in range(4)] == [["3"], ["5"], ["7"], ["9"]]
    assert worker_devices(0, 1, 3, visible) == ["3", "5", "7"]


def test_too_few_gpus_is_a_clear_error():
    with pytest.raises(SchedulingError, match=r"3 worker\(s\) x 2 GPU\(s\) = 6 GPUs.*are 4 \(3,5,7,9\).*-n 2"):
        worker_devices(0, 3, 2, ["3", "5", "7", "9"])
    with pytest.raises(SchedulingError, match="visible to pytest are none"):
        worker_devices(0, 1, 1, [])
    with pytest.raises(SchedulingError, match="1 or more"):
        worker_devices(0, 1, 0, ["0"])


def test_worker_position_from_workerinput_or_environment():
    assert worker_position({"workerid": "gw3", "workercount": 4}, {}) == (3, 4)
    assert worker_position(None, {"PYTEST_XDIST_WORKER": "gw1", "PYTEST_XDIST_WORKER_COUNT": "2"}) == (1, 2)
    assert worker_position(None, {}) is None
    with pytest.raises(SchedulingError, match="'node7'"):
        worker_position({"workerid": "node7", "workercount": 2}, {})


def test_pin_worker_sets_the_workers_slice():
    for index, expected in ((0, "3,5"), (1, "7,9")):
        environ = {"CUDA_VISIBLE_DEVICES": "3,5,7,9"}
        line = pin_worker(environ, {"workerid": f"gw{index}", "workercount": 2}, 2)
        assert environ["CUDA_VISIBLE_DEVICES"] == expected
        assert line.startswith(f"gw{index}: CUDA_VISIBLE_DEVICES={expected} (2 GPU(s) per worker")


def test_pin_worker_default_gives_one_gpu_each_or_shares_round_robin():
    environ = {"CUDA_VISIBLE_DEVICES": "4,6,8"}
    pin_worker(environ, {"workerid": "gw2", "workercount": 3}, None)
    assert environ["CUDA_VISIBLE_DEVICES"] == "8"
    shared = {"CUDA_VISIBLE_DEVICES": "4,6"}
    line = pin_worker(shared, {"workerid": "gw2", "workercount": 3}, None)
    assert shared["CUDA_VISIBLE_DEVICES"] == "4" and "3 workers share 2 GPU(s)" in line


def test_pin_worker_leaves_cpu_runs_and_the_controller_alone(monkeypatch):
    monkeypatch.setattr("pytest_icl.plugin.scheduling._nvml_device_count", _no_driver)
    environ = {}
    assert pin_worker(environ, {"workerid": "gw0", "workercount": 2}, None) is None  # no GPU: nothing to pin
    assert pin_worker(environ, None, 2) is None  # not a worker
    assert pin_worker({"CUDA_VISIBLE_DEVICES": "0,1"}, {"workerid": "gw0", "workercount": 2}, 0) is None
    assert environ == {}
    with pytest.raises(SchedulingError, match="no NVIDIA GPU was found"):
        pin_worker({}, {"workerid": "gw0", "workercount": 2}, 1)
    with pytest.raises(SchedulingError, match="2 worker"):
        pin_worker({"CUDA_VISIBLE_DEVICES": "0"}, {"workerid": "gw0", "workercount": 2}, 1)


def test_pin_worker_refuses_after_cuda_started(monkeypatch):
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(is_initialized=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", fake)
    with pytest.raises(SchedulingError, match="CUDA was initialised"):
        pin_worker({"CUDA_VISIBLE_DEVICES": "0,1"}, {"workerid": "gw0", "workercount": 2}, 1)


MODELS = ["gpt2", "gpt2-medium", "smollm2-135m"]


@pytest.mark.parametrize(
    ("nodeid", "model", "pair"),
    [
        ("tasks/x/x.yaml::test_icl[gpt2-x-simaou]", "gpt2", "gpt2::tasks/x/x.yaml::x"),
        ("tasks/x/x.yaml::test_icl[gpt2-medium-x-simaou]", "gpt2-medium", "gpt2-medium::tasks/x/x.yaml::x"),
        ("tasks/a/a.yaml::test_icl[smollm2-135m-topic-nonce-baseline]", "smollm2-135m", "smollm2-135m::tasks/a/a.yaml::topic-nonce"),
        ("lm-eval-tasks::test_icl[gpt2-sst2-kendall]", "gpt2", "gpt2::lm-eval-tasks::sst2"),
        ("tests/test_mine.py::test_antonyms[gpt2]", "gpt2", "gpt2::tests/test_mine.py"),
        ("tests/test_mine.py::TestA::test_b[gpt2-medium-3]", "gpt2-medium", "gpt2-medium::tests/test_mine.py::TestA"),
    ],
)
def test_scope_of_model_and_pair(nodeid, model, pair):
    assert scope_of(nodeid, MODELS, "model") == model
    assert scope_of(nodeid, MODELS, "pair") == pair


def test_pair_mode_separates_tasks_and_keeps_a_pairs_properties_together():
    ids = [f"tasks/{t}/{t}.yaml::test_icl[gpt2-{t}-{p}]" for t in ("a", "b") for p in ("accuracy", "simam")]
    scopes = [scope_of(i, MODELS, "pair") for i in ids]
    assert scopes[0] == scopes[1] != scopes[2] == scopes[3]
    assert len({scope_of(i, MODELS, "model") for i in ids}) == 1


@pytest.mark.parametrize("nodeid", ["tests/test_plain.py::test_x", "tests/test_p.py::test_x[3]", "t.py::test_x[gpt2x-1]"])
def test_items_without_a_model_have_no_scope(nodeid):
    assert scope_of(nodeid, MODELS, "model") is None


def test_dist_mode_is_checked():
    assert parse_dist_mode(" Pair ") == "pair"
    with pytest.raises(SchedulingError, match="'file' is not a mode; use model"):
        parse_dist_mode("file")


def test_make_scheduler_groups_through_xdist():
    pytest.importorskip("xdist")

    class Config:  # what LoadScopeScheduling reads from a config: the worker specs (-n 2)
        def getvalue(self, name):
            return {"tx": ["2*popen"]}[name]

    scheduler = make_scheduler(Config(), None, MODELS, "pair")
    assert scheduler._split_scope("tasks/x/x.yaml::test_icl[gpt2-x-simaou]") == "gpt2::tasks/x/x.yaml::x"
    assert scheduler._split_scope("tests/test_plain.py::test_x") == "tests/test_plain.py"
    with pytest.raises(SchedulingError):
        make_scheduler(Config(), None, MODELS, "task")


@pytest.mark.parametrize(
    ("parsed", "distload", "args", "expected"),
    [
        ("no", False, ["-n", "2"], None),  # xdist's default: -n alone gives "load", which the user did not ask for
        ("load", False, ["-n", "2", "--dist", "load"], "load"),
        ("loadfile", False, ["-n", "2", "--dist=loadfile"], "loadfile"),
        ("no", True, ["-n", "2", "-d"], "load"),  # -d is --dist=load
        ("no", False, ["-n", "2", "--dist", "no"], "no"),  # the default, but written: only the arguments tell
        ("no", False, ["--dist=load", "-n", "2", "--dist=no"], "no"),  # argparse keeps the last
        ("no", False, ["-n", "2", "tests/--dist"], None),
    ],
)
def test_a_dist_mode_counts_as_given_only_when_the_user_wrote_it(parsed, distload, args, expected):
    namespace = types.SimpleNamespace(dist=parsed, distload=distload)
    assert given_dist(namespace, args) == expected
