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


def tflite_logits(model: bytes | str, pixels: np.ndarray) -> np.ndarray:
    """Dog logits of a TFLite model (flatbuffer bytes or a file path) for float pixels [N, H, W, 3]."""
    # LiteRT's interpreter, the successor of tf.lite.Interpreter (deprecated in TF 2.19, due for removal): the
    # runtime a device runs, in its own package, so the check holds as TensorFlow drops its copy.
    from ai_edge_litert.interpreter import Interpreter

    with native_logs_held():
        interpreter = (Interpreter(model_content=model) if isinstance(model, bytes)
                       else Interpreter(model_path=str(model)))
        interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    logits = []
    for image in np.asarray(pixels, np.float32):
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        logits.append(interpreter.get_tensor(target["index"]).ravel()[0])
    return np.array(logits)
