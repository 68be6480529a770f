"""ONNX Runtime serving of the LSTM network matches torch float32 (training/learners/lstm_onnx.py)."""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from training.learners.lstm import _LSTMNet  # noqa: E402
from training.learners.lstm_onnx import OnnxLSTMRunner, export_onnx  # noqa: E402

LENGTH, FEATURES, HIDDEN = 12, 7, 16


@pytest.fixture(scope="module")
def net_and_runner():
    torch.manual_seed(0)
    net = _LSTMNet(FEATURES, HIDDEN, 2, 0.1, False).eval()
    runner = OnnxLSTMRunner(model=export_onnx(net, sequence_length=LENGTH, n_inputs=FEATURES), threads=1)
    return net, runner


@pytest.mark.parametrize("batch", [1, 37])
def test_matches_torch(net_and_runner, batch):
    net, runner = net_and_runner
    windows = np.random.default_rng(batch).standard_normal((batch, LENGTH, FEATURES)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(windows)).numpy()
    got = runner(windows)
    assert got.shape == (batch,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_rejects_wrong_shape(net_and_runner):
    _, runner = net_and_runner
    with pytest.raises(ValueError):
        runner(np.zeros((2, LENGTH + 1, FEATURES), dtype=np.float32))
    assert runner(np.zeros((0, LENGTH, FEATURES), dtype=np.float32)).shape == (0,)
