"""The prepared GPU check: one command, no network, under 8 minutes on one H100/H200.

    python benchmarks/gpu_check.py                 # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --dry-run       # the same code path on the CPU, tiny models only
    python benchmarks/gpu_check.py --json out.json # also write every figure as JSON

1. **Matmul peak.** An 8192^3 bf16 matrix product (3 warm-ups, 10 timed with CUDA events):
   the TFLOP/s the analysis is measured against.
2. **Paper-sized models.** Randomly initialised models built on the GPU in bf16 from the
   configs of gpt-neo-2.7B (32 layers, hidden 2560, 20 heads, local window 256, vocab 50257)
   and a Llama-7B-shaped model (32 layers, hidden 4096, 32 heads, intermediate 11008, vocab
   32000); the full analysis (the pipeline's ``analyse_task``: runs, metrics, row) of the made-up task
   ``tasks/topic_nonce`` (k = 16, 64 eval examples, multi-token choices). Printed: seconds per
   stage, tokens/s, the share of the matmul peak (FLOPs estimated as 2·N·tokens for the
   no-grad forwards and 6·N·tokens for the FT steps, N = the weights of every ``nn.Linear``;
   it ignores attention's T² term and counts the vocabulary projection at every position, so it
   is an estimate), and peak GPU memory. Random weights: the metrics mean nothing, only that
   they are finite and the passes run.
3. **CUDA vs CPU.** Every tiny architecture of ``tests/tiny_models.py`` analysed on the CPU and
   on the GPU, both fp32 with TF32 off; records must agree within |a - b| <= 1e-4 + 1e-4·|b|
   (the bound the CPU tests use for cached vs re-encoded prefixes), and predictions must be
   equal wherever the CPU's top two choices are more than 1e-3 apart.
4. **Device maps and out of memory.** Saved tiny models loaded through ``--icl-device-map``
   (a JSON file, and ``auto``) give the plain load's records; a deliberately impossible
   allocation prints ``placement.describe_oom``'s paragraph with the real figures.

Nothing is downloaded: the tokenizer is the tiny BPE tokenizer of ``tests/tiny_models.py``
(trained in-process; its ids fit every vocabulary), and the task is read from its JSONL files
with plain Python (no lm-eval, no datasets: the device machine need not have them; the
demonstrations are the first k of ``train`` shuffled with ``random.Random(seed)``, not the
plugin's exact selection). Exits 2 with one line when no CUDA device is present, 1 when a
stage failed or the CUDA/CPU records disagree.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere: pytest_icl and tests/ come from this checkout

TASK_DIR = ROOT / "tasks" / "topic_nonce"
ATOL = RTOL = 1e-4  # CUDA vs CPU, fp32 both
TIE_MARGIN = 1e-3  # predictions are compared only where the CPU's top two choices differ by more
TRANSFORMERS_PIN = "5.23.0"


# --------------------------------------------------------------------------- the task


def made_up_task(*, shots: int = 16, limit: int = 64, seed: int = 1):
    """topic_nonce as an ``IclTask``, read from its YAML and JSONL files without lm-eval."""
    import yaml

    from pytest_icl.tasks.loading import Example, IclTask, TaskSettings

    class Loader(yaml.SafeLoader):  # lm-eval tags (!function ...) are not needed here: read them as None
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    config = yaml.load((TASK_DIR / "topic_nonce.yaml").read_text(), Loader=Loader)
    template, choices, target = config["doc_to_text"], tuple(config["doc_to_choice"]), config["doc_to_target"]

    def render(row):
        text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: str(row[m[1]]), template)
        return Example(text, choices, int(row[target]))

    def rows(split):
        return [json.loads(line) for line in (TASK_DIR / f"{split}.jsonl").read_text().splitlines() if line.strip()]

    train, test = rows("train"), rows("test")
    random.Random(seed).shuffle(train)
    random.Random(1).shuffle(test)
    icl = config.get("icl") or (config.get("metadata") or {}).get("icl") or {}  # top level, or under metadata
    return IclTask(
        name="topic_nonce",
        description=config.get("description", ""),
        target_delimiter=config.get("target_delimiter", " "),
        fewshot_delimiter=config.get("fewshot_delimiter", "\n\n"),
        demonstrations=tuple(render(r) for r in train[:shots]),
        eval_examples=tuple(render(r) for r in test[:limit]),
        settings=TaskSettings(shots=shots, seed=seed, lr=float(icl.get("lr", 3e-3)), position="label"),
        config_hash="gpu_check",
    )


# --------------------------------------------------------------------------- models


def model_config(family: str, *, tiny: bool, eos_id: int):
    """gpt-neo-2.7B's and a Llama-7B's shapes; ``tiny`` keeps the family and shrinks the sizes."""
    from transformers import GPTNeoConfig, LlamaConfig

    ids = dict(bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    if family == "gpt-neo-2.7B":
        layers, hidden, heads, vocab, window = (2, 64, 4, 512, 8) if tiny else (32, 2560, 20, 50257, 256)
        return GPTNeoConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            window_size=window,
            attention_types=[[["global", "local"], layers // 2]],
            max_position_embeddings=2048,
            resid_dropout=0.0,
            embed_dropout=0.0,
            attention_dropout=0.0,
            classifier_dropout=0.0,
            **ids,
        )
    if family == "llama-7B-shaped":
        layers, hidden, heads, inter, vocab = (2, 64, 4, 172, 512) if tiny else (32, 4096, 32, 11008, 32000)
        return LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            intermediate_size=inter,
            max_position_embeddings=2048,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            attention_dropout=0.0,
            **ids,
        )
    raise ValueError(f"unknown family {family!r}")


def build_model(config, device, dtype):
    """A randomly initialised eval-mode model, built directly on ``device`` (no CPU copy of 7B weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="eager")
    if next(model.parameters()).device.type != torch.device(device).type:  # a transformers that ignores the context
        model.to(device)
    return model.eval()


def linear_weights(model) -> int:
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


class TokenCounter:
    """Tokens through the model's forward: no-grad passes (scoring) and grad passes (FT steps)."""

    def __init__(self, model):
        self.forward = self.train = self.passes = 0
        self.handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        import torch

        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        mask = kwargs.get("attention_mask")
        # the mask also covers a reused prefix's cached keys: count this pass's real tokens only
        tokens = int(mask[:, -ids.shape[1] :].sum()) if mask is not None else ids.numel()
        self.passes += 1
        if torch.is_grad_enabled():
            self.train += tokens
        else:
            self.forward += tokens

    def remove(self):
        self.handle.remove()


# --------------------------------------------------------------------------- stages


@dataclass
class Report:
    device: str
    figures: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)

    def line(self, text: str) -> None:
        print(text, flush=True)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device, report: Report) -> float:
    """Measured TFLOP/s of one big matrix product (bf16 on CUDA; fp32 and small on the CPU dry run)."""
    import torch

    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (512, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    reps = 10
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        synchronize(device)
        seconds = start.elapsed_time(end) / 1000 / reps
    else:
        begin = time.perf_counter()
        for _ in range(reps):
            a @ b
        seconds = (time.perf_counter() - begin) / reps
    tflops = 2 * n**3 / seconds / 1e12
    report.figures["matmul_peak_tflops"] = round(tflops, 1)
    report.line(f"matmul peak: {n}^3 {str(dtype).removeprefix('torch.')} = {tflops:.1f} TFLOP/s")
    return tflops


def analyse_big(family: str, device, dtype, tokenizer, task, peak_tflops: float, report: Report, *, tiny: bool, batch_size: int):
    """Build one paper-sized model, run the full analysis, print the figures."""
    import torch

    from pytest_icl.engine.runs import run_settings
    from pytest_icl.models.loading import LoadedModel, ModelSpec
    from pytest_icl.pipeline import PipelineSettings, analyse_task

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    begin = time.perf_counter()
    model = build_model(model_config(family, tiny=tiny, eos_id=tokenizer.eos_token_id), device, dtype)
    synchronize(device)
    build = time.perf_counter() - begin
    params = sum(p.numel() for p in model.parameters())
    weights = linear_weights(model)
    run_settings(model, tokenizer, made_up_task(shots=2, limit=4), batch_size=batch_size)  # warm-up: kernels, cuBLAS
    synchronize(device)
    # Built in memory, not loaded: the spec only names it in the row.
    lm = LoadedModel(ModelSpec(family, "built", family, id=family), model, tokenizer, device, dtype, None, None, build)
    counter = TokenCounter(model)
    begin = time.perf_counter()
    result = analyse_task(lm, task, PipelineSettings(batch_size=batch_size))  # the plugin's pipeline, from the loaded task on
    synchronize(device)
    metrics_s = result.row["timings"]["metrics"]
    run = time.perf_counter() - begin - metrics_s
    counter.remove()
    records, analysis = result.records, result.analysis
    flops = 2 * weights * counter.forward + 6 * weights * counter.train
    achieved = flops / run / 1e12
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    finite = [k for k in ("acc_zsl", "acc_icl", "acc_ft", "simam_before", "simam_after") if math.isfinite(analysis.values[k])]
    stages = {k: round(v, 2) for k, v in records.timings.items()} | {"build": round(build, 2), "metrics": round(metrics_s, 2)}
    figures = {
        "params": params,
        "linear_weights": weights,
        "dtype": str(dtype).removeprefix("torch."),
        "stages_s": stages,
        "analysis_s": round(run, 2),
        "forward_tokens": counter.forward,
        "ft_tokens": counter.train,
        "passes": counter.passes,
        "tokens_per_s": round((counter.forward + counter.train) / run, 1),
        "tflops": round(achieved, 2),
        "share_of_peak": round(achieved / peak_tflops, 4),
        "peak_memory_gib": round(peak_gib, 2),
        "prompt_tokens": records.prompt_tokens,
        "acc": {k: analysis.values[f"acc_{k}"] for k in ("zsl", "icl", "ft")},
    }
    report.figures[family] = figures
    report.line(
        f"{family}: {params / 1e9:.2f} B params ({figures['dtype']}), built in {build:.1f} s; analysis {run:.1f} s "
        f"({', '.join(f'{k} {v}' for k, v in stages.items() if k != 'build')} s); "
        f"{counter.forward} scoring + {counter.train} FT tokens in {counter.passes} passes = {figures['tokens_per_s']:.0f} tokens/s; "
        f"~{achieved:.2f} TFLOP/s = {100 * achieved / peak_tflops:.2f} % of the matmul peak; peak memory {f'{peak_gib:.1f} GiB' if math.isfinite(peak_gib) else 'n/a'}; "
        f"longest ICL prompt {records.prompt_tokens} tokens"
    )
    if len(finite) < 5:
        raise RuntimeError(f"{family}: non-finite metrics {sorted(set(analysis.values) - set(finite))[:5]}")
    del model, records, lm, result


def _max_excess(a, b) -> tuple[float, float]:
    """(max |a - b|, max of |a - b| - (ATOL + RTOL·|b|)): the second > 0 means out of tolerance."""
    import torch

    a, b = a.float().cpu(), b.float().cpu()
    finite = torch.isfinite(b)
    if not torch.equal(finite, torch.isfinite(a)):
        return math.inf, math.inf
    diff = (a[finite] - b[finite]).abs()
    if diff.numel() == 0:
        return 0.0, -ATOL
    return float(diff.max()), float((diff - (ATOL + RTOL * b[finite].abs())).max())


def compare_devices(arch: str, device, report: Report, *, task) -> bool:
    """One tiny architecture analysed on the CPU and on ``device`` (fp32 both): records agree?"""
    import torch

    from pytest_icl.engine.runs import run_settings
    from tests.tiny_models import make_tiny_model

    model, tokenizer = make_tiny_model(arch)
    on_cpu = run_settings(model, tokenizer, task)
    on_device = run_settings(copy.deepcopy(model).to(device), tokenizer, task)
    worst, ok = 0.0, True
    pairs = [
        ("ft_train_queries", on_device.ft_train_queries, on_cpu.ft_train_queries),
        ("ft_losses", torch.tensor(on_device.ft_losses), torch.tensor(on_cpu.ft_losses)),
    ]
    for setting in ("zsl", "icl", "ft"):
        a, b = getattr(on_device, setting), getattr(on_cpu, setting)
        for name in ("logprobs", "outputs", "eval_scores", "context_scores", "queries"):
            if getattr(b, name) is not None:
                pairs.append((f"{setting}.{name}", getattr(a, name), getattr(b, name)))
        top2 = b.logprobs.topk(min(2, b.logprobs.shape[1]), dim=1).values
        clear = (top2[:, 0] - top2[:, -1]) > TIE_MARGIN
        if not torch.equal(a.predictions[clear], b.predictions[clear]):
            ok = False
            report.line(f"  {arch}: {setting} predictions differ on examples the CPU separates by > {TIE_MARGIN}")
    for name, a, b in pairs:
        diff, excess = _max_excess(a, b)
        worst = max(worst, diff)
        if excess > 0:
            ok = False
            report.line(f"  {arch}: {name} differs by {diff:.2e} (> {ATOL} + {RTOL}·|cpu|)")
    report.figures.setdefault("cuda_vs_cpu_max_abs_diff", {})[arch] = worst
    report.line(f"{arch}: {device} vs cpu, fp32: max |diff| {worst:.2e} -> {'ok' if ok else 'MISMATCH'}")
    return ok


def device_map_loads(arch: str, device, report: Report, *, task, folder: Path) -> bool:
    """A saved tiny model loaded through ``--icl-device-map`` (a file, and auto) gives the plain load's records."""
    import torch
    from transformers import AutoModelForCausalLM

    from pytest_icl.engine.runs import run_settings
    from pytest_icl.models.placement import check_placement, device_map_kwargs, input_device
    from tests.tiny_models import make_tokenizer, save_tiny_model

    save_tiny_model(arch, folder)
    tokenizer = make_tokenizer()
    plain = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").to(device).eval()
    expected = run_settings(plain, tokenizer, task)
    del plain
    target = 0 if device.type == "cuda" else "cpu"
    map_file = folder / "device_map.json"
    map_file.write_text(json.dumps({"": target}))
    ok = True
    for name in (str(map_file), "auto"):
        kwargs = device_map_kwargs(name, device)
        model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", **kwargs).eval()
        check_placement(model, kwargs["device_map"] if isinstance(kwargs["device_map"], dict) else None)
        got = run_settings(model, tokenizer, task)
        same = all(
            torch.equal(getattr(got, s).predictions, getattr(expected, s).predictions)
            and _max_excess(getattr(got, s).outputs, getattr(expected, s).outputs)[1] <= 0
            for s in ("zsl", "icl", "ft")
        )
        ok &= same
        report.line(
            f"{arch}: device map {Path(name).name}: input on {input_device(model)}, records {'equal the plain load' if same else 'DIFFER'}"
        )
    return ok


def oom_message(device, report: Report) -> None:
    """Ask for far more memory than the GPU has (a plain cudaMalloc that fails at once) and print the paragraph."""
    import torch

    from pytest_icl.models.placement import describe_oom, is_out_of_memory

    if device.type != "cuda":
        report.line("out-of-memory paragraph: skipped on the CPU")
        return
    total = torch.cuda.get_device_properties(device).total_memory
    try:
        torch.empty(2 * total, dtype=torch.uint8, device=device)
    except Exception as error:  # noqa: BLE001 - the check is that it is recognised
        if not is_out_of_memory(error):
            raise
        report.line(f"out-of-memory paragraph: {describe_oom(error, device, batch_size=16)}")
        return
    raise RuntimeError("allocating twice the GPU's memory did not fail")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU: check the script without a GPU")
    parser.add_argument("--families", default="gpt-neo-2.7B,llama-7B-shaped", help="paper-sized models to analyse (comma-separated)")
    parser.add_argument("--archs", default=None, help="tiny architectures to compare CUDA vs CPU (default: all of tests/tiny_models.py)")
    parser.add_argument("--limit", type=int, default=64, help="eval examples of the task (default 64)")
    parser.add_argument("--batch-size", type=int, default=16, help="eval examples per forward (the plugin's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars would bury the figures
    if args.dry_run:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device visible (torch {torch.__version__}, CUDA {torch.version.cuda}); "
            "run on a GPU machine, or pass --dry-run for the CPU path",
            file=sys.stderr,
        )
        return 2
    else:
        device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 comparisons must be fp32 (bf16 runs are unaffected)
    torch.backends.cudnn.allow_tf32 = False
    report = Report(str(device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    report.figures["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__, "cuda": torch.version.cuda}
    report.line(f"gpu_check on {name}: torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}")
    if transformers.__version__ != TRANSFORMERS_PIN:
        report.line(f"note: the project pins transformers {TRANSFORMERS_PIN}; figures below are with {transformers.__version__}")
    start = time.perf_counter()

    from tests.tiny_models import ARCHS, make_tokenizer

    tokenizer = make_tokenizer()
    task = made_up_task(limit=args.limit)
    peak = matmul_peak(device, report)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for family in [f for f in args.families.split(",") if f]:
        try:
            analyse_big(family, device, dtype, tokenizer, task, peak, report, tiny=args.dry_run, batch_size=args.batch_size)
        except Exception as error:  # keep going: one failure must not hide the other stages' figures
            traceback.print_exc()
            report.failures.append(f"{family}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    small = made_up_task(shots=4, limit=min(16, args.limit))
    for arch in args.archs.split(",") if args.archs else ARCHS:
        try:
            if not compare_devices(arch, device, report, task=small):
                report.failures.append(f"{arch}: CUDA and CPU records differ")
        except Exception as error:
            traceback.print_exc()
            report.failures.append(f"{arch}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    import tempfile

    archs = args.archs.split(",") if args.archs else ARCHS
    for arch in [a for a in ("llama", "gpt_neo") if a in archs]:
        try:
            with tempfile.TemporaryDirectory() as folder:
                if not device_map_loads(arch, device, report, task=small, folder=Path(folder)):
                    report.failures.append(f"{arch}: a device-map load changed the records")
        except Exception as error:
            traceback.print_exc()
            report.failures.append(f"{arch} device map: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    try:
        oom_message(device, report)
    except Exception as error:
        traceback.print_exc()
        report.failures.append(f"out of memory: {type(error).__name__}: {error}")
    report.figures["total_s"] = round(time.perf_counter() - start, 1)
    report.figures["failures"] = report.failures
    if args.json is not None:
        args.json.write_text(json.dumps(report.figures, indent=1, default=str))
    if report.failures:
        print(f"gpu_check: FAILED ({len(report.failures)}): {'; '.join(report.failures)}", file=sys.stderr)
        return 1
    report.line(f"gpu_check: OK in {report.figures['total_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
