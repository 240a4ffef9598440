"""Running the exported TFLite classifiers, one image at a time as on a device."""

from __future__ import annotations

import numpy as np


def tflite_logits(model: bytes | str, pixels: np.ndarray) -> np.ndarray:
    """Dog logits of a TFLite model (flatbuffer bytes or a file path) for float pixels [N, H, W, 3]."""
    import tensorflow as tf

    interpreter = (tf.lite.Interpreter(model_content=model) if isinstance(model, bytes)
                   else tf.lite.Interpreter(model_path=str(model)))
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    logits = []
    for image in np.asarray(pixels, np.float32):
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        logits.append(interpreter.get_tensor(target["index"]).ravel()[0])
    return np.array(logits)
