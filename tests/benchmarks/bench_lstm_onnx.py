"""Benchmark: the LSTM learner's network served by torch vs ONNX Runtime on CPU (a script, not a test).

Run: .venv/bin/python tests/benchmarks/bench_lstm_onnx.py [--features N] [--threads N] [--out PATH]

1. Builds ``_LSTMNet`` (training/learners/lstm.py) at the pipeline's default size, read from
   config/pipeline.json ``models.lstm_predictor`` over the learner's own defaults (the learner feeds
   the first ``features`` feature columns to the network), with seeded random weights, eval mode.
2. Exports it to ONNX bytes in memory (legacy TorchScript exporter, ``dynamo=False``; dynamic batch
   axis) and opens an ``onnxruntime.InferenceSession`` from the bytes, CPU provider, with
   ``intra_op_num_threads`` equal to ``torch.get_num_threads()``.
3. Checks max |ORT - torch| on each probe batch, then times 1, 256 and 1000 rows: best and median
   of 50 calls (1 row) or 10 calls (bigger), under ``torch.no_grad`` for torch, after one warm-up
   call each. Prints a table and writes JSON to var/bench-lstm-onnx.json.

Numbers depend on the machine and on whatever else runs on it; the load average is recorded.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from training.learners.lstm import LSTMLearner, _LSTMNet  # noqa: E402

TOLERANCE = 1e-4
SIZES = ((1, 50), (256, 10), (1000, 10))


def default_params() -> dict:
    params = dict(LSTMLearner().params)
    config = json.loads((REPO / "config" / "pipeline.json").read_text())
    params.update({k: v for k, v in config.get("models", {}).get("lstm_predictor", {}).items() if k in params})
    return params


def export(net: torch.nn.Module, length: int, n_inputs: int) -> tuple[bytes, list[str]]:
    buf = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(
            net,
            (torch.zeros(1, length, n_inputs),),
            buf,
            dynamo=False,
            input_names=["windows"],
            output_names=["output"],
            dynamic_axes={"windows": {0: "batch"}, "output": {0: "batch"}},
            opset_version=17,
        )
    return buf.getvalue(), sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0][:140]}" for w in caught})


def timings(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000.0)
    return min(samples), statistics.median(samples)


def main() -> None:
    params = default_params()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=params["features"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "var" / "bench-lstm-onnx.json"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    length, hidden, layers = params["sequence_length"], params["hidden_size"], params["num_layers"]
    n_inputs = args.features

    torch.manual_seed(args.seed)
    net = _LSTMNet(n_inputs, hidden, layers, params["dropout"], False).eval()
    model, export_warnings = export(net, length, n_inputs)

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    rng = np.random.default_rng(args.seed)
    rows_out = []
    for rows, repeats in SIZES:
        probe = rng.standard_normal((rows, length, n_inputs)).astype(np.float32)
        tensor = torch.from_numpy(probe)

        def run_torch(tensor=tensor):
            with torch.no_grad():
                return net(tensor).numpy()

        def run_ort(probe=probe):
            return session.run(None, {input_name: probe})[0]

        ref, got = run_torch(), run_ort()
        assert got.shape == ref.shape == (rows,), (got.shape, ref.shape)
        diff = float(np.max(np.abs(ref - got)))
        t_best, t_med = timings(run_torch, repeats)
        o_best, o_med = timings(run_ort, repeats)
        rows_out.append({
            "rows": rows, "repeats": repeats,
            "torch_best_ms": t_best, "torch_median_ms": t_med,
            "ort_best_ms": o_best, "ort_median_ms": o_med,
            "speedup_best": t_best / o_best, "speedup_median": t_med / o_med,
            "max_abs_diff": diff, "close": diff < TOLERANCE,
        })

    result = {
        "network": {"sequence_length": length, "n_inputs": n_inputs, "hidden_size": hidden, "num_layers": layers},
        "threads": threads,
        "onnx_bytes": len(model),
        "export_warnings": export_warnings,
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": ort.__version__, "numpy": np.__version__,
        },
        "cpu_count": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
        "tolerance": TOLERANCE,
        "results": rows_out,
    }

    print(f"LSTM L={length} F={n_inputs} H={hidden} layers={layers}, threads={threads}, "
          f"torch {torch.__version__}, onnxruntime {ort.__version__}, load {os.getloadavg()[0]:.2f}")
    print(f"{'rows':>5} | {'torch best/med ms':>18} | {'ORT best/med ms':>18} | {'speedup b/m':>11} | max|diff|")
    for r in rows_out:
        print(f"{r['rows']:>5} | {r['torch_best_ms']:8.3f} {r['torch_median_ms']:8.3f}  | "
              f"{r['ort_best_ms']:8.3f} {r['ort_median_ms']:8.3f}  | "
              f"{r['speedup_best']:5.2f} {r['speedup_median']:5.2f} | {r['max_abs_diff']:.2e}")
    for w in export_warnings:
        print("export warning:", w)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", out)
    if not all(r["close"] for r in rows_out):
        sys.exit("ORT output differs from torch by more than the tolerance")


if __name__ == "__main__":
    main()
