"""The serving settings that the server, the command line, the deploy step and Vertex AI's
container spec share: the one place they are written. Importable without KServe or TensorFlow."""

SERVING_PORT = 8080  # the server's port where none is given, and the one clusters send to
MODEL_NAME = "video-classifier"  # the model's name in the routes, and the deployed service's
TOP_K = 5  # classes per answer
BATCH_SIZE = 8  # clips batch prediction scores at once (videoclf predict, the batch pipeline)
VIDEOS_PER_SHARD = 500  # videos of one pod of the batch pipeline
MAX_REQUEST_MB = 64  # larger requests are answered 413
# How long the deploy step waits for the service to serve the new model: above Knative's own
# progress deadline (600 s, after which it marks a revision that never got ready as failed).
READY_TIMEOUT_S = 900
MAX_BATCH_CLIPS = 32  # clips of concurrent requests the server runs through the model at once
# On SIGTERM, requests in flight get this long to finish: less than Kubernetes' default
# terminationGracePeriodSeconds (30), after which the pod is killed.
SHUTDOWN_GRACE_SECONDS = 25
