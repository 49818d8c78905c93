"""The trained model as a TensorFlow SavedModel, for servers that load no Keras file.

Keras 3's ``model.save`` writes ``.keras``, which TF Serving and Vertex AI's prebuilt
containers do not load. The SavedModel here has one signature, ``serving_default``: uint8 clips
``[batch, frames, height, width, 3]`` in (``clips``), class probabilities out
(``probabilities``, ``[batch, classes]``). It loads with ``tf.saved_model.load`` alone, no code
of this project; the model folder beside it holds the class names and how clips were sampled.
"""

from pathlib import Path

import keras
import tensorflow as tf

SAVED_MODEL_DIR = "saved_model"


def export_saved_model(model: keras.Model, path: Path) -> Path:
    """Writes the model's ``serving_default`` signature to ``path``, replacing what is there."""
    frames, height, width, channels = model.input_shape[1:]
    archive = keras.export.ExportArchive()
    archive.track(model)

    def probabilities(clips):
        return {"probabilities": tf.nn.softmax(tf.cast(model(clips, training=False), tf.float32))}

    archive.add_endpoint(
        "serving_default", tf.function(probabilities),
        input_signature=[tf.TensorSpec([None, frames, height, width, channels], tf.uint8, name="clips")])
    archive.write_out(str(path), verbose=False)
    return Path(path)
