"""pytest-xdist: which GPUs each worker owns, and which worker runs which items.

**Pinning.** Every xdist worker is a fresh Python process that inherits the caller's
environment, so without help every worker opens ``cuda:0``. :func:`pin_worker` gives worker
``gwI`` its own slice of the caller's visible GPUs by setting ``CUDA_VISIBLE_DEVICES`` in the
worker's environment; inside the worker those GPUs are then ``cuda:0``, ``cuda:1``, ... CUDA
reads the variable once, when the process first initialises it, so this must run before
anything in the worker touches ``torch.cuda`` (``pytest_configure``, first thing): importing
torch is harmless, ``torch.cuda.is_available()`` is not. The slice is taken from the caller's
*visible list* (``CUDA_VISIBLE_DEVICES`` when set, e.g. ``3,5,7,9``), never from the raw device
count, so ``CUDA_VISIBLE_DEVICES=3,5,7,9 pytest -n 2 --icl-gpus-per-worker 2`` gives gw0 ``3,5``
and gw1 ``7,9``.

**Scheduling.** xdist's controller sees node ids only, not items. :func:`scope_of` reads the
model (and task) from a node id; :func:`make_scheduler` hands xdist a ``LoadScopeScheduling``
that keeps each scope on one worker:

* mode ``model``: every item of a model on one worker, which loads it once;
* mode ``pair``: every item of a (model, task) pair on one worker, so one model's pairs spread
  over several workers (for more GPUs than models; each worker loads the model it is given,
  at most once, since items arrive ordered by model).

**A user's ``--dist``.** ``-n 4 --dist loadfile`` is the user's choice, and is kept: :func:`user_dist`
finds it (xdist turns its default ``no`` into ``load`` under ``-n``, so the mode given is read from
the command line as parsed before that), the plugin's hook then returns None so that xdist's own
scheduler runs, and the report header says that the grouping by model is off. ``--dist`` together
with ``--icl-dist`` is a usage error naming both.

No torch here: this module is imported at collection, and must run before CUDA exists.

Example::

    pin_worker(os.environ, config.workerinput, gpus_per_worker=2)   # 'gw1: CUDA_VISIBLE_DEVICES=7,9 (...)'
    scope_of("tasks/a/a.yaml::test_icl[gpt2-a-simaou]", ["gpt2"], "pair")   # 'gpt2::tasks/a/a.yaml::a'
"""

from __future__ import annotations

import ctypes
import os
import shlex
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import pytest

from pytest_icl.errors import SchedulingError

DIST_MODES = ("model", "pair")
USER_DIST = pytest.StashKey[str]()  # the --dist mode a user gave with -n: xdist's own scheduler runs, not ours
GENERATED_TEST = "test_icl"  # plugin._items_for names every generated item test_icl[<model>-<task>-<property>]


# --------------------------------------------------------------------------- visible GPUs


def visible_devices(environ: Mapping[str, str], *, count: Callable[[], int | None] | None = None) -> list[str] | None:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries; None when unknown/absent.

    With CUDA_VISIBLE_DEVICES set, its entries (indices, ``GPU-…``/``MIG-…`` UUIDs) up to the
    first invalid one, as CUDA reads it: ``""`` and ``"-1"`` hide every GPU (``[]``), and
    ``"0,-1,2"`` shows only ``0``. Unset, ``["0", ..., str(n - 1)]`` for the driver's count n.

    The count comes from NVML (``libnvidia-ml``, the driver's management library that
    nvidia-smi reads), which enumerates GPUs without initialising CUDA in this process.
    ``torch.cuda.device_count()`` tries NVML too but falls back to ``cudaGetDeviceCount``, which
    initialises CUDA, after which this process ignores CUDA_VISIBLE_DEVICES; it also needs
    torch imported (a second or two per worker). ``nvidia-smi -L`` would need a subprocess and
    the tool on PATH. (NVML counts physical GPUs; to use MIG instances, list their UUIDs in
    CUDA_VISIBLE_DEVICES.)
    """
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        devices = []
        for entry in value.split(","):
            entry = entry.strip()
            if not entry or entry.startswith("-"):
                break  # CUDA stops at the first invalid entry
            devices.append(entry)
        return devices
    number = (count or _nvml_device_count)()
    return None if number is None else [str(i) for i in range(number)]


def _nvml_device_count() -> int | None:
    """GPUs the NVIDIA driver sees, or None without a driver (no CUDA context is created)."""
    name = "nvml.dll" if sys.platform == "win32" else "libnvidia-ml.so.1"
    try:
        nvml = ctypes.CDLL(name)
    except OSError:
        return None
    try:
        if nvml.nvmlInit_v2() != 0:
            return None
    except AttributeError:
        return None
    try:
        number = ctypes.c_uint(0)
        return number.value if nvml.nvmlDeviceGetCount_v2(ctypes.byref(number)) == 0 else None
    finally:
        nvml.nvmlShutdown()


# --------------------------------------------------------------------------- pinning


def worker_devices(worker_index: int, worker_count: int, gpus_per_worker: int, visible: Sequence[str] | None) -> list[str]:
    """Worker ``gw<worker_index>``'s GPUs: its consecutive slice of ``visible``."""
    if gpus_per_worker < 1:
        raise SchedulingError(f"--icl-gpus-per-worker must be 1 or more, got {gpus_per_worker}")
    if not 0 <= worker_index < worker_count:
        raise SchedulingError(f"worker index {worker_index} is outside 0..{worker_count - 1}")
    visible = list(visible or [])
    needed = worker_count * gpus_per_worker
    if len(visible) < needed:
        shown = f"{len(visible)} ({','.join(visible)})" if visible else "none"
        raise SchedulingError(
            f"pytest-xdist runs {worker_count} worker(s) x {gpus_per_worker} GPU(s) = {needed} GPUs, but the GPUs visible "
            f"to pytest are {shown}; run fewer workers (-n {max(1, len(visible) // gpus_per_worker)}), "
            "lower --icl-gpus-per-worker, or make more GPUs visible (CUDA_VISIBLE_DEVICES)."
        )
    return visible[worker_index * gpus_per_worker : (worker_index + 1) * gpus_per_worker]


def worker_position(workerinput: Mapping[str, Any] | None, environ: Mapping[str, str]) -> tuple[int, int] | None:
    """(index, count) of this xdist worker (``gw3`` of 4 -> ``(3, 4)``); None outside a worker.

    Read from ``config.workerinput``, else from the PYTEST_XDIST_WORKER(_COUNT) variables xdist
    sets before the worker's config exists (so pinning may also run from an earlier hook).
    """
    workerid = (workerinput or {}).get("workerid") or environ.get("PYTEST_XDIST_WORKER")
    count = (workerinput or {}).get("workercount") or environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workerid or count is None:
        return None
    digits = str(workerid).removeprefix("gw")
    if not digits.isdigit():
        raise SchedulingError(f"cannot tell this xdist worker's index from its id {workerid!r} (expected gw0, gw1, ...)")
    return int(digits), int(count)


def pin_worker(environ: MutableMapping[str, str], workerinput: Mapping[str, Any] | None, gpus_per_worker: int | None) -> str | None:
    """Set CUDA_VISIBLE_DEVICES in ``environ`` to this worker's GPUs; a line saying what was done.

    ``gpus_per_worker``: N gives each worker N GPUs of its own (an error when there are fewer
    than workers x N); None (the default) gives each worker one GPU when there are enough, and
    otherwise shares them round-robin (gw0 and gw2 on the first of two GPUs), which beats every
    worker on cuda:0; 0 pins nothing. Returns None outside an xdist worker, when no GPU is
    visible (a CPU run), or with 0.
    """
    position = worker_position(workerinput, environ)
    if position is None or gpus_per_worker == 0:
        return None
    _refuse_if_cuda_started()
    index, count = position
    visible = visible_devices(environ)
    if gpus_per_worker is None:
        if not visible:
            return None
        if len(visible) >= count:
            devices, how = worker_devices(index, count, 1, visible), "one GPU per worker"
        else:
            devices = [visible[index % len(visible)]]
            how = f"{count} workers share {len(visible)} GPU(s); --icl-gpus-per-worker 1 needs one GPU per worker"
    else:
        if visible is None:
            raise SchedulingError(
                f"--icl-gpus-per-worker {gpus_per_worker}: no NVIDIA GPU was found (no driver), so none can be given to the workers."
            )
        devices = worker_devices(index, count, gpus_per_worker, visible)
        how = f"{gpus_per_worker} GPU(s) per worker"
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    return f"gw{index}: CUDA_VISIBLE_DEVICES={environ['CUDA_VISIBLE_DEVICES']} ({how}; visible to pytest: {','.join(visible)})"


def _refuse_if_cuda_started() -> None:
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and callable(getattr(cuda, "is_initialized", None)) and cuda.is_initialized():
        raise SchedulingError(
            "CUDA was initialised in this xdist worker before pytest-icl could give it its GPUs (a conftest or plugin "
            "used torch.cuda at import), so every worker would share the first GPU; move that torch.cuda call into a "
            "fixture or test, or pass --icl-gpus-per-worker 0 to share GPUs knowingly."
        )


# --------------------------------------------------------------------------- scheduling


def parse_dist_mode(text: str) -> str:
    mode = str(text).strip().lower()
    if mode not in DIST_MODES:
        raise SchedulingError(
            f"--icl-dist: {text!r} is not a mode; use model (every item of a model on one worker) or pair "
            "(every item of a model x task pair on one worker: more workers than models)."
        )
    return mode


def scope_of(nodeid: str, model_ids: Sequence[str], mode: str) -> str | None:
    """The scheduling scope of a node id, or None for an item that tests no model.

    Node ids: ``tasks/x/x.yaml::test_icl[<model>-<task>-<property>]`` (generated items) and
    ``test_file.py::test_name[<model>]`` (tests using ``icl_analysis``, maybe with more
    parameters after the model's). A model id that is a prefix of another (``gpt2`` and
    ``gpt2-medium``) is matched longest first.
    """
    path, _, name = nodeid.rpartition("::")
    function, bracket, params = name.partition("[")
    if not bracket or not params.endswith("]"):
        return None
    params = params[:-1]
    for model_id in sorted(model_ids, key=len, reverse=True):
        if params == model_id or params.startswith(model_id + "-"):
            break
    else:
        return None
    if mode == "model":
        return model_id
    rest = params[len(model_id) + 1 :]
    if function == GENERATED_TEST and "-" in rest:
        return f"{model_id}::{path}::{rest.rpartition('-')[0]}"  # the task: what lies between model and property
    return f"{model_id}::{path}"  # a test file's tests on one model usually share its task


def given_dist(namespace: Any, args: Sequence[str]) -> str | None:
    """The ``--dist`` mode the user gave (``--dist X``, ``--dist=X``, ``-d``), or None where xdist picked it.

    ``namespace`` is the command line as parsed before xdist's own ``pytest_cmdline_main`` turns its
    default ``no`` into ``load`` under ``-n`` (pytest's ``config.known_args_namespace``): any mode but
    ``no`` there was given. ``no`` is also the default, so whether ``--dist no`` was written is read
    from ``args`` (the command line, ``PYTEST_ADDOPTS`` and the ini's ``addopts``; argparse takes the last).
    """
    if getattr(namespace, "distload", False):
        return "load"
    mode = getattr(namespace, "dist", None)
    if mode not in (None, "no"):
        return mode
    for index in range(len(args) - 1, -1, -1):
        arg = str(args[index])
        if arg.startswith("--dist="):
            return arg.partition("=")[2]
        if arg == "--dist" and index + 1 < len(args):
            return str(args[index + 1])
    return None


def user_dist(config: Any, icl_dist: tuple[Any, str] | None) -> str | None:
    """The ``--dist`` mode a user gave with ``-n`` (honoured: xdist's scheduler runs), or None.

    ``icl_dist``: ``--icl-dist`` (or ``icl_dist`` in the ini file) and where it came from, when given;
    both at once are a usage error naming the two.
    """
    if config.getoption("dist", "no") == "no" or not config.getoption("tx", None):
        return None  # xdist is not distributing (or not installed)
    args = [*shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *config.getini("addopts"), *config.invocation_params.args]
    given = given_dist(config.known_args_namespace, args)
    if given is not None and icl_dist is not None:
        raise SchedulingError(
            f"--dist {given} and {icl_dist[1]} were both given: --dist picks one of pytest-xdist's own schedulers, "
            f"{icl_dist[1]} pytest-icl's (each model's items on one worker, or each model x task pair); give one of them."
        )
    return given


def dist_header(given: str) -> str:
    """The report header's line when a user's ``--dist`` is honoured instead of pytest-icl's scheduler."""
    return (
        f"icl: --dist {given} was given, so pytest-xdist schedules the items and pytest-icl's grouping by model (--icl-dist) "
        "is off: each worker loads every model it gets items of; drop --dist to group them"
    )


def make_scheduler(config: Any, log: Any, model_ids: Sequence[str], mode: str):
    """xdist scheduler (for ``pytest_xdist_make_scheduler``) that keeps each scope on one worker.

    xdist's own ``--dist loadgroup`` does not group on pytest 9.2 (pytest-xdist #1386), so the
    grouping is done by overriding ``LoadScopeScheduling._split_scope``; node ids that test no
    model fall back to xdist's own scope (module/class).
    """
    from xdist.scheduler import LoadScopeScheduling

    mode = parse_dist_mode(mode)
    ids = tuple(model_ids)

    class IclScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = scope_of(nodeid, ids, mode)
            return scope if scope is not None else super()._split_scope(nodeid)

    return IclScheduling(config, log)
