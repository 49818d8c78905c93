"""The serving settings that the server, the command line, the deploy step and Vertex AI's
container spec share: the one place they are written. Importable without KServe or TensorFlow."""

SERVING_PORT = 8080  # the server's port where none is given, and the one clusters send to
MODEL_NAME = "video-classifier"  # the model's name in the routes, and the deployed service's
TOP_K = 5  # classes per answer
BATCH_SIZE = 8  # clips batch prediction scores at once (videoclf predict, the batch pipeline)
VIDEOS_PER_SHARD = 500  # videos of one pod of the batch pipeline
MAX_REQUEST_MB = 64  # larger requests are answered 413
