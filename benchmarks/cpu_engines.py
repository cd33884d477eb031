"""CPU inference engines side by side, each against the peak of its own arithmetic on this machine.

    python benchmarks/cpu_engines.py --bundle ~/.cache/rewardserve/demo-minilm \\
        --data ../shared/data/hh_harmless_train.jsonl [--models demo,bert-base] [--engines …]

Measures in one run, with the same threads:

- **peaks**: fp32 GEMM (the best of onnxruntime's MLAS and torch), bf16 GEMM (torch/oneDNN, where the CPU
  has avx512_bf16 or AMX) and int8 GEMM (torch ``_int_mm`` and onnxruntime's u8×s8 ``MatMulInteger``);
- **engines** on the demo model (HH items at its 96-token cap) and a BERT-base-sized one (random weights,
  256-token cap): onnxruntime fp32 and dynamic int8 (today's variants), onnxruntime static int8 (QDQ,
  calibrated), OpenVINO fp32/bf16 on the fp32 ONNX, OpenVINO with NNCF static int8 (SmoothQuant), the NNCF
  int8 ONNX under onnxruntime, torch fp32 and bf16, eager and under torch.compile (inductor, dynamic shapes).

Each engine scores length-sorted batches of 32; reported: items/s, achieved GOP/s and the share of its
arithmetic's peak; parity against torch fp32 (pairs in the fp32 order, max |diff|); and batch stability:
the largest change of one item's score when it sits among other neighbours. Calibration uses items the
measurement does not. Results: benchmarks/results/cpu_engines.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_info
from offline_throughput import forward_flops
from performance import bert_base_bundle

from export.static_int8 import calibration_batches, nncf_int8_onnx, ort_static_int8
from rewardmodel import EncodedInput, Formatter, PaddedBatch, load_tokenizer, pad_batch, read_card
from rewardmodel.onnx_model import onnx_scorer, open_session
from rewardmodel.openvino_model import Precision, compile_onnx, openvino_scorer
from rewardmodel.sources import load_examples
from rewardmodel.torch_model import load_torch_model, torch_scorer
from rewardmodel.variants import ONNX_VARIANTS

RESULTS = Path(__file__).resolve().parent / "results"
Scorer = Callable[[PaddedBatch], np.ndarray]
ARITHMETIC = {"torch fp32": "fp32", "torch bf16": "bf16", "torch.compile fp32": "fp32", "torch.compile bf16": "bf16",
              "ort fp32": "fp32", "ort int8 dynamic": "int8",
              "ort int8 static (QDQ)": "int8", "ort nncf int8": "int8", "ov fp32": "fp32", "ov bf16": "bf16",
              "ov nncf int8": "int8", "ov nncf int8 + bf16": "int8", "ov int8-static (the bundle's)": "int8",
              "ov int8-static + bf16 (the bundle's)": "int8"}


def best_time(fn: Callable[[], Any], repeats: int = 10) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def peaks(threads: int, n: int = 1024) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of square GEMMs of size ``n``."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    torch.set_num_threads(threads)
    ops = 2 * n**3 / 1e9
    out: dict[str, float] = {}
    a, b = torch.randn(n, n), torch.randn(n, n)
    out["fp32 torch"] = ops / best_time(lambda: a @ b)

    def ort_matmul(kind: str) -> float:
        feeds: dict[str, np.ndarray]
        if kind == "fp32":
            node = helper.make_node("MatMul", ["A", "B"], ["C"])
            types, feeds = (TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT), {
                "A": np.random.randn(n, n).astype(np.float32), "B": np.random.randn(n, n).astype(np.float32)}
        else:
            node = helper.make_node("MatMulInteger", ["A", "B"], ["C"])
            types, feeds = (TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32), {
                "A": np.random.randint(0, 255, (n, n), dtype=np.uint8),
                "B": np.random.randint(-127, 127, (n, n), dtype=np.int8)}
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", types[0], [n, n]),
                                                helper.make_tensor_value_info("B", types[1], [n, n])],
                                  [helper.make_tensor_value_info("C", types[2], [n, n])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(onnx.shape_inference.infer_shapes(model).SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        return ops / best_time(lambda: session.run(None, feeds))

    out["fp32 onnxruntime"] = ort_matmul("fp32")
    out["int8 onnxruntime"] = ort_matmul("int8")
    ai, bi = torch.randint(-127, 127, (n, n), dtype=torch.int8), torch.randint(-127, 127, (n, n), dtype=torch.int8)
    out["int8 torch"] = ops / best_time(lambda: torch._int_mm(ai, bi))
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        ab, bb = a.bfloat16(), b.bfloat16()
        out["bf16 torch"] = ops / best_time(lambda: ab @ bb)
    return {k: round(v, 1) for k, v in out.items()}


def ov_scorer(path: str, threads: int, precision: Precision) -> Scorer:
    """An ONNX file on OpenVINO's CPU plugin, compiled as the openvino backend compiles it."""
    return openvino_scorer(compile_onnx(Path(path), threads, precision))


def engines(bundle: Path, calib: list[PaddedBatch], threads: int, work: Path, wanted: set[str],
            notes: dict[str, str]) -> dict[str, Scorer]:
    """Every engine in ``wanted`` that builds here (a failure is noted, not fatal)."""
    card = read_card(bundle)
    fp32 = bundle / ONNX_VARIANTS["fp32"].file
    raw = work / f"{bundle.name}-raw.onnx"  # the plain export, before onnxruntime's fusions
    if not raw.exists():
        from export.onnx_export import export_onnx

        eager, _ = load_torch_model(bundle, attn_implementation="eager")
        export_onnx(eager, card.formatting, raw, 17)
    built: dict[str, Scorer] = {}

    def add(name: str, make: Callable[[], Scorer]) -> None:
        if name not in wanted:
            return
        started = time.perf_counter()
        try:
            built[name] = make()
            notes.setdefault(name, f"built in {time.perf_counter() - started:.0f} s")
        except Exception as exc:  # a candidate that does not build is a finding, not a crash
            notes[name] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"

    model, _ = load_torch_model(bundle)
    add("torch fp32", lambda: torch_scorer(model))
    add("torch bf16", lambda: torch_scorer(load_torch_model(bundle, dtype=torch.bfloat16)[0]))
    # inductor with dynamic shapes (every batch has its own length); compiled on the first (untimed) pass
    add("torch.compile fp32", lambda: torch_scorer(torch.compile(model, dynamic=True)))
    add("torch.compile bf16", lambda: torch_scorer(torch.compile(load_torch_model(bundle, dtype=torch.bfloat16)[0],
                                                                 dynamic=True)))
    add("ort fp32", lambda: onnx_scorer(open_session(fp32, threads=threads)))
    add("ort int8 dynamic", lambda: onnx_scorer(open_session(bundle / ONNX_VARIANTS["int8"].file, threads=threads)))

    def static_ort() -> Scorer:
        out = work / f"{bundle.name}-ort-static.onnx"
        notes["ort int8 static (QDQ)"] = ort_static_int8(raw, out, calib, card.model_type)
        return onnx_scorer(open_session(out, threads=threads))

    add("ort int8 static (QDQ)", static_ort)
    nncf_onnx = work / f"{bundle.name}-nncf.onnx"

    def nncf_model() -> Path:
        if not nncf_onnx.exists():
            notes["nncf"] = nncf_int8_onnx(raw, nncf_onnx, calib)
        return nncf_onnx

    add("ort nncf int8", lambda: onnx_scorer(open_session(nncf_model(), threads=threads)))
    add("ov fp32", lambda: ov_scorer(str(fp32), threads, "f32"))
    add("ov bf16", lambda: ov_scorer(str(fp32), threads, "bf16"))
    add("ov nncf int8", lambda: ov_scorer(str(nncf_model()), threads, "f32"))
    add("ov nncf int8 + bf16", lambda: ov_scorer(str(nncf_model()), threads, "bf16"))
    if "int8-static" in card.onnx:  # what `rewardserve export` wrote (calibrated on its calibration data)
        static = str(bundle / ONNX_VARIANTS["int8-static"].file)
        add("ov int8-static (the bundle's)", lambda: ov_scorer(static, threads, "f32"))
        add("ov int8-static + bf16 (the bundle's)", lambda: ov_scorer(static, threads, "bf16"))
    return built


def batches_of(encoded: list[EncodedInput], order: list[int], spec: Any, size: int) -> list[PaddedBatch]:
    return [pad_batch([encoded[i] for i in order[s:s + size]], spec) for s in range(0, len(order), size)]


def measure_model(bundle: Path, args: argparse.Namespace, max_length: int, peak: dict[str, float],
                  work: Path) -> dict[str, Any]:
    card = read_card(bundle)
    spec = replace(card.formatting, max_length=max_length)
    formatter = Formatter(load_tokenizer(bundle), spec)
    examples = load_examples(args.data)
    pairs = args.pairs if max_length <= 128 else args.pairs // 2  # BERT-base at 256 tokens: half, for time
    measured, held = examples[:pairs], examples[pairs:pairs + args.calibration]
    encoded = formatter.encode_many([(ex.prompt, c) for ex in measured for c in ex.completions])
    calib_items = formatter.encode_many([(ex.prompt, ex.completions[0]) for ex in held])
    calib = calibration_batches(calib_items, spec)
    by_length = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    batches = batches_of(encoded, by_length, spec, args.batch_size)
    shuffled = list(range(len(encoded)))
    random.Random(0).shuffle(shuffled)
    mixed = batches_of(encoded, shuffled, spec, args.batch_size)  # other neighbours, other padding
    from transformers import AutoConfig

    flops = sum(forward_flops(AutoConfig.from_pretrained(bundle), b) for b in batches)
    tokens = sum(len(e.input_ids) for e in encoded)
    notes: dict[str, str] = {}
    built = engines(bundle, calib, args.threads, work, set(args.engines.split(",")), notes)
    reference: np.ndarray | None = None
    rows: dict[str, dict[str, Any]] = {}
    for name, score in built.items():
        torch.set_num_threads(args.threads)
        run = lambda s=score: [s(b) for b in batches]  # noqa: E731
        run()
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            outs = run()
            times.append(time.perf_counter() - t)
        seconds = statistics.median(times)
        scores = np.empty(len(encoded))
        scores[by_length] = np.concatenate([np.asarray(o, dtype=np.float64).reshape(len(o), -1)[:, 0] for o in outs])
        again = np.empty(len(encoded))
        again[shuffled] = np.concatenate([np.asarray(score(b), dtype=np.float64).reshape(b.input_ids.shape[0], -1)[:, 0]
                                          for b in mixed])
        if reference is None:
            reference = scores  # the first engine is torch fp32
        ref_order = reference[0::2] > reference[1::2]
        arithmetic = ARITHMETIC[name]
        peak_of = max(v for k, v in peak.items() if k.startswith(arithmetic))
        rows[name] = {
            "items_per_s": round(len(encoded) / seconds, 1), "tokens_per_s": round(tokens / seconds),
            "gops": round(flops / seconds / 1e9, 1), "arithmetic": arithmetic,
            "fraction_of_peak": round(flops / seconds / 1e9 / peak_of, 3),
            "pairs_in_fp32_order": int(((scores[0::2] > scores[1::2]) == ref_order).sum()),
            "pairs": len(measured), "max_abs_diff": float(np.abs(scores - reference).max()),
            "batch_stability_max_diff": float(np.abs(scores - again).max()), "note": notes.get(name, ""),
        }
        print(bundle.name, name, rows[name], flush=True)
    failed = {k: v for k, v in notes.items() if k not in rows and k in ARITHMETIC}
    return {"max_length": max_length, "items": len(encoded), "tokens": tokens, "gflop_per_pass": flops / 1e9,
            "engines": rows, "failed": failed, "notes": notes}


def write_markdown(res: dict[str, Any], stem: str) -> None:
    m = res["machine"]
    lines = ["# CPU engines against the peak of their own arithmetic", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {res['threads']} threads; flags: {res['isa']}; versions: "
             f"{m['versions']}", "", "Peaks (square GEMM, n=1024): " +
             ", ".join(f"{k} {v:,.0f}" for k, v in res["peaks"].items()) + " GFLOP/s (GOP/s for int8).", ""]
    for model, r in res["models"].items():
        base = r["engines"].get("ort int8 dynamic", {}).get("items_per_s")
        lines += [f"## {model} ({r['items']} HH items, cap {r['max_length']} tokens, batches of 32)", "",
                  "| engine | items/s | × today's int8 | GOP/s | of its peak | pairs in fp32 order | max abs diff "
                  "| batch-stability max diff |", "|---|---|---|---|---|---|---|---|"]
        for name, e in r["engines"].items():
            ratio = f"{e['items_per_s'] / base:.2f}" if base else "–"
            lines.append(f"| {name} | {e['items_per_s']:,.0f} | {ratio} | {e['gops']:,.0f} | "
                         f"{e['fraction_of_peak']:.0%} ({e['arithmetic']}) | {e['pairs_in_fp32_order']}/{e['pairs']} "
                         f"| {e['max_abs_diff']:.3g} | {e['batch_stability_max_diff']:.3g} |")
        for name, why in r["failed"].items():
            lines.append(f"| {name} | {why} | | | | | | |")
        lines.append("")
    lines += [f"Reproduce: `{res['command']}`", ""]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="the demo bundle (exported: fp32 and int8)")
    parser.add_argument("--data", required=True, help="HH-style preference data (realistic lengths)")
    parser.add_argument("--models", default="demo,bert-base")
    parser.add_argument("--engines", default=",".join(ARITHMETIC))
    parser.add_argument("--pairs", type=int, default=256, help="pairs measured (2 items each; half that for the "
                                                               "BERT-base model)")
    parser.add_argument("--calibration", type=int, default=300, help="items (after the measured ones) that "
                                                                         "calibrate static int8")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rewardserve-bench")
    parser.add_argument("--name", default="cpu_engines", help="results file stem in benchmarks/results/")
    args = parser.parse_args()
    demo = Path(args.bundle).expanduser()
    args.work.mkdir(parents=True, exist_ok=True)
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[-1].split("\n", 1)[0].split()
    isa = [f for f in flags if f.startswith(("avx512_vnni", "avx512_bf16", "amx", "avx_vnni", "avx512f", "avx2"))]
    res: dict[str, Any] = {"command": shlex.join(["python", "benchmarks/cpu_engines.py", *sys.argv[1:]]),
                           "machine": machine_info(("torch", "onnxruntime", "openvino", "nncf", "transformers")),
                           "threads": args.threads, "isa": " ".join(sorted(set(isa))),
                           "peaks": peaks(args.threads), "models": {}}
    print("peaks", res["peaks"], flush=True)
    for model in args.models.split(","):
        bundle, cap = (demo, read_card(demo).formatting.max_length) if model == "demo" else \
            (bert_base_bundle(demo, args.work), 256)
        res["models"][model] = measure_model(bundle, args, cap, res["peaks"], args.work)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(res, indent=2) + "\n")
        write_markdown(res, args.name)
    print((RESULTS / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
