"""A network run by onnxruntime instead of torch: the faster CPU engine for batch prediction.

On this project's small networks, onnxruntime's CPU kernels (convolutions fused with their
activations, no Python between layers) run 2-3x faster than torch eager (bench/predict.py). A
twin is only used when its outputs match torch's within PARITY_ATOL on a probe batch, so the
engine changes speed, not predictions; anything it cannot export stays on torch.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

from facetune.models.ensemble import input_specs

#: ONNX opset of every export (the exported files and the in-memory twins).
OPSET = 17
#: Largest |onnxruntime - torch| output difference a twin may show on the probe batch.
PARITY_ATOL = 1e-4
INPUT_NAME, OUTPUT_NAME = "faces", "outputs"


def onnx_bytes(module: nn.Module, example: torch.Tensor) -> bytes:
    """`module` (in eval mode) as an ONNX model: input `faces` shaped like `example` with any N
    ((N, C, S, S), the module's input spec), output `outputs` (N, K)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter: the torch.export one needs onnxscript, one more
        # dependency, and these plain conv/dense models need nothing it adds.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}}, opset_version=OPSET, dynamo=False,
        )
    return buffer.getvalue()


class OnnxRuntimeNetwork(nn.Module):
    """Calls an onnxruntime session like a torch module: (N, C, S, S) float tensor in, float tensor out."""

    def __init__(self, model: bytes, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        # Idle intra-op threads sleep instead of spinning: predict decodes the next batch on the
        # same cores meanwhile (1.3-1.5x on the local path, bench/predict.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        faces = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: faces})[0])


def onnx_runtime_twin(network: nn.Module, threads: int | None = None,
                      atol: float = PARITY_ATOL) -> tuple[nn.Module | None, str]:
    """(the twin, "") when `network` exports and its twin matches it within `atol` on a probe
    batch; else (None, the reason in a few words)."""
    specs = input_specs(network)
    if len(specs) != 1:  # an exported graph has one input: such an ensemble stays on torch
        return None, f"its members take {len(specs)} input specs"
    was_training = network.training
    network.eval()
    probe = torch.rand(16, *specs[0].shape, generator=torch.Generator().manual_seed(0))
    try:
        twin = OnnxRuntimeNetwork(onnx_bytes(network, probe[:2]), threads)
        with torch.no_grad():
            difference = float((twin(probe) - network(probe).float()).abs().max())
    except Exception as error:  # any export or session failure means: stay on torch
        return None, f"not exportable ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    finally:
        network.train(was_training)
    if not difference <= atol:
        return None, f"outputs differ by {difference:.2g} > {atol:g}"
    return twin, ""
