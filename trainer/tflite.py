"""Running the exported TFLite classifiers, one image at a time as on a device.

TFLite's converter and interpreter log from native code straight to the
process's stderr, whatever TF_CPP_MIN_LOG_LEVEL says. native_logs_held() holds
those lines back when that setting asks for errors only (the command line's
default) and prints them if the work fails, so a failure keeps its detail.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import numpy as np


@contextlib.contextmanager
def native_logs_held():
    """Holds back what native code writes to file descriptor 2 while the block runs, unless
    TF_CPP_MIN_LOG_LEVEL is below 2 (or unset); prints it if the block raises."""
    if int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") or 0) < 2:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class Classifier:
    """A TFLite classifier of this pipeline's kind, its interpreter made once: one image of float pixels
    [1, size, size, 3] in 0-255 in, its dog logit out. A model whose input and output are quantized (int8 or uint8,
    as a converter writes when asked) is given and read through its own scale and zero point. ValueError, in one
    line, for a file that is no TFLite model or not one of this shape."""

    def __init__(self, model: bytes | str):
        # LiteRT's interpreter, the successor of tf.lite.Interpreter (deprecated in TF 2.19, due for removal): the
        # runtime a device runs, in its own package, so the check holds as TensorFlow drops its copy.
        from ai_edge_litert.interpreter import Interpreter

        try:
            with native_logs_held():
                self._interpreter = (Interpreter(model_content=model) if isinstance(model, bytes)
                                     else Interpreter(model_path=str(model)))
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ValueError((str(error).strip().splitlines() or [type(error).__name__])[0]) from None
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        # the shape as written: a side left open (-1) is read as 1 by "shape", and a photo would become one pixel
        shape = [int(side) for side in inputs[0]["shape_signature"]] if len(inputs) == 1 else []
        numbers = {np.dtype(np.float32), np.dtype(np.int8), np.dtype(np.uint8)}
        if inputs and outputs and not {np.dtype(inputs[0]["dtype"]), np.dtype(outputs[0]["dtype"])} <= numbers:
            raise ValueError(f"its input is {np.dtype(inputs[0]['dtype'])} and its output "
                             f"{np.dtype(outputs[0]['dtype'])}: not a classifier of this pipeline (float32 pixels, "
                             "or int8 or uint8 ones, in; a logit out)")
        if (len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or shape[1] != shape[2] or shape[1] < 1
                or len(outputs) != 1 or int(np.prod(outputs[0]["shape"])) != 1):
            def shapes(details) -> str:
                return ", ".join(str([int(side) for side in d["shape_signature"]]) for d in details) or "none"
            raise ValueError(f"its input is {shapes(inputs)} and its output {shapes(outputs)}: not a classifier of "
                             "this pipeline (one image [1, size, size, 3] in, one dog logit out)")
        self._input, self._output = inputs[0], outputs[0]
        self.image_size = shape[1]

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """Dog logits for float pixels [N, size, size, 3], one image at a time as on a device."""
        logits = []
        for image in np.asarray(pixels, np.float32):
            self._interpreter.set_tensor(self._input["index"], _quantized(image[None], self._input))
            self._interpreter.invoke()
            logits.append(_dequantized(self._interpreter.get_tensor(self._output["index"]), self._output).ravel()[0])
        return np.array(logits, np.float32)


def _quantized(values: np.ndarray, detail: dict) -> np.ndarray:
    """`values` as the tensor's type: through its scale and zero point where it is quantized."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype.kind not in "iu" or not scale:
        return values.astype(dtype)
    limits = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), limits.min, limits.max).astype(dtype)


def _dequantized(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind not in "iu" or not scale:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * scale


def tflite_logits(model: bytes | str, pixels: np.ndarray) -> np.ndarray:
    """Dog logits of a TFLite model (flatbuffer bytes or a file path) for float pixels [N, H, W, 3]."""
    return Classifier(model).logits(pixels)
