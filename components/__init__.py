"""The pipeline's stages, one package each, in data-flow order.

1. ``download_subset``: the chosen classes' videos of a zip, folder or annotation list, split.
2. ``extract_frames``: RGB clips decoded with OpenCV, as TFRecord shards.
3. ``train_model``: the (2+1)D ResNet, trained with Keras; a model folder.
4. ``evaluate_model``: test metrics, confusion matrix and report.
5. ``serve_model``: the model put to use: predictions, an inference server, deployment.

Each stage's plain, testable functions live beside its ``component.py``, a thin KFP
component that calls them. Components import their stage's code in their body, so a stage
module never needs KFP's authoring API at run time.
"""
