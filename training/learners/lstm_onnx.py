"""Serving ``lstm_predictor``'s network through ONNX Runtime on CPU (``ML_LSTM_ONNX``: the model
manager uses it when a load-time check finds it faster and close, see ``inference.model_manager``).

``export_onnx`` turns the learner's ``_LSTMNet`` into ONNX bytes (float32, eval mode, dynamic batch);
``OnnxLSTMRunner`` runs those bytes on windows shaped like ``_Windows.batch`` output and returns
the same standardized outputs as ``net(torch.from_numpy(windows))``.

tests/benchmarks/bench_api.py times it against torch at the default size (figures in the README).

Framework-free: no Django. torch is imported only by ``export_onnx`` and onnxruntime only by the
runner, so serving needs numpy + onnxruntime. The model is plain bytes (no pickle): store and verify
them by checksum like any other artifact file.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import numpy as np

OPSET = 17
INPUT_NAME = "windows"
OUTPUT_NAME = "output"


def export_onnx(net: Any, *, sequence_length: int, n_inputs: int) -> bytes:
    """ONNX bytes of ``net`` (an ``_LSTMNet``): input ``windows`` (batch, L, F) float32 -> (batch,).

    Uses the legacy TorchScript exporter (``dynamo=False``; the torch.export one needs onnxscript).
    ``net`` itself is left untouched (a CPU eval-mode copy is exported).
    """
    import torch

    model = copy.deepcopy(net).to("cpu").float().eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # Known and harmless here: the legacy-exporter deprecation notice, nn.LSTM's shape checks
        # seen by the tracer, and the "batch_size other than 1" LSTM notice (the initial states are
        # built from the input's shape, so any batch size works; the unit test checks batch 1 and 37).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, int(sequence_length), int(n_inputs), dtype=torch.float32),),
            buf,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
        )
    return buf.getvalue()


class OnnxLSTMRunner:
    """An onnxruntime CPU session over ``export_onnx`` bytes; call it with (n, L, F) windows."""

    def __init__(self, *, model: bytes, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            bytes(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        shape = self._session.get_inputs()[0].shape
        self.sequence_length, self.n_inputs = int(shape[1]), int(shape[2])

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.sequence_length, self.n_inputs):
            raise ValueError(
                f"windows must be (n, {self.sequence_length}, {self.n_inputs}), got {tuple(x.shape)}"
            )
        if len(x) == 0:
            return np.empty(0, dtype=np.float32)
        return self._session.run([OUTPUT_NAME], {INPUT_NAME: x})[0].reshape(len(x))
