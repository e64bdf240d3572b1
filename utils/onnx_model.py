"""The embedding network as an ONNX file: writing it from PyTorch, and running it with onnxruntime.

onnx, onnxscript and onnxruntime are imported only here and only when called, so that the rest of the
repository works without them. The file takes ``images`` (N, 3, H, W) float32 pixels / 255, any N,
and gives ``embeddings`` (N, 128) float32, L2-normalised: ``nets.facenet.FacenetNet.embed`` with its
BatchNorm folded, so that ``utils.runtime.Embedder`` runs the file as it runs the network.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings

import numpy as np
import torch
from torch import nn

from utils.checkpoint import weights_info_path
from utils.config import UserError, check_output_file
from utils.runtime import inference_copy

INPUT_NAME, OUTPUT_NAME = "images", "embeddings"
DEFAULT_OPSET = 18



def check_onnx_target(target: str, inputs: list[str]) -> str:
    """``target`` if an ONNX file can be written there: an ``.onnx`` file path, in a folder that holds files,
    naming none of ``inputs`` (the weights, their JSON, the check images), nor its JSON one of them."""
    outputs = [target, weights_info_path(target)]
    for output in outputs:
        for source in inputs:
            if os.path.exists(source) and os.path.exists(output) and os.path.samefile(output, source) or \
                    os.path.abspath(output) == os.path.abspath(source):
                raise UserError(f"--onnx_path {target}: would overwrite {source}, an input of this export; "
                                "give another file name ending in .onnx")
    return check_output_file("onnx_path", target, (".onnx",))


class EmbedFunction(nn.Module):
    """``net.embed`` as a module's forward, which is what the exporter traces."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(x)


def onnx_bytes(model: nn.Module, input_shape: list[int], opset: int = DEFAULT_OPSET) -> bytes:
    """The ONNX model of ``model.embed`` (a ``nets.facenet.FacenetNet``, BatchNorm folded first)
    at ``input_shape`` = [height, width, 3], with a dynamic batch axis, as serialised bytes."""
    net = EmbedFunction(inference_copy(model))
    example = torch.rand(2, 3, input_shape[0], input_shape[1])
    batch = torch.export.Dim("batch", min=1)
    # The exporter reports each of its steps on stdout and warns about its own internals; the caller
    # reports the outcome.
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(net, (example,), dynamo=True, opset_version=opset, verbose=False,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes=({0: batch},), optimize=True, external_data=False)
    except ImportError as err:
        raise UserError(f"ONNX export needs {err.name or 'onnx'}: pip install -r requirements.txt") from None
    return program.model_proto.SerializeToString()


class OnnxEmbedder:
    """An ONNX embedding file run by onnxruntime on the CPU, with the input size it was exported at."""

    def __init__(self, path: str, threads: int = 0) -> None:
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such ONNX file; write it with python export.py or set --onnx_path")
        try:
            import onnxruntime
        except ImportError:
            raise UserError("running an ONNX file needs onnxruntime: pip install -r requirements.txt") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own classes for every kind of bad file
            raise UserError(f"{path}: not a usable ONNX model ({type(err).__name__}); export it again "
                            "with python export.py") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape if len(inputs) == 1 else []
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]) or shape[1] != 3 or len(outputs) != 1:
            raise UserError(f"{path}: not a FaceNet embedding model (input {shape}); "
                                  "export it with python export.py")
        self.input_name = inputs[0].name
        self.input_shape = [shape[2], shape[3], shape[1]]
        self.embedding_size = outputs[0].shape[-1]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings (N, D) float32 of network inputs (N, 3, H, W), in any memory format:
        the file's output as it is, in the place of ``nets.facenet.FacenetNet.embed``."""
        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])
