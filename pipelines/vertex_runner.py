"""Runs the pipeline on Vertex AI Pipelines (``google-cloud-aiplatform``'s ``PipelineJob``, the
``vertex`` extra).

The pipeline is compiled for Vertex AI afresh for each run: the training task asks for its GPU
by machine-spec enum, and the file holds the pipeline spec alone, without Kubernetes' platform
spec (which Vertex AI neither reads nor loads).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from pipelines.targets import SubmitError, Target
from pipelines.video_classification import PIPELINE_NAME, compile_pipeline

log = logging.getLogger(__name__)


def vertex_job(package: Path, params: dict, project: str, region: str, pipeline_root: str,
               run_name: str | None = None, enable_caching: bool = True, credentials=None):
    """The ``aiplatform.PipelineJob`` that runs ``package`` on Vertex AI Pipelines."""
    if not pipeline_root.startswith("gs://"):
        raise SubmitError(f"--pipeline-root must be a gs:// folder, got {pipeline_root!r}")
    try:
        from google.cloud import aiplatform
    except ImportError as e:
        raise SubmitError("Vertex AI needs google-cloud-aiplatform: pip install 'videoclf[vertex]'") from e
    return aiplatform.PipelineJob(
        display_name=run_name or PIPELINE_NAME, template_path=str(package), pipeline_root=pipeline_root,
        parameter_values=params, enable_caching=enable_caching, project=project, location=region,
        credentials=credentials)


def submit_vertex(params: dict, target: Target, image_names: dict[str, str], project: str, region: str,
                  pipeline_root: str, run_name: str | None = None, enable_caching: bool = True,
                  service_account: str | None = None, wait: bool = False) -> dict:
    """Submits a Vertex AI PipelineJob; returns its resource name, console URL and, if ``wait``,
    its final state."""
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    target.check_params(params)
    try:
        with tempfile.TemporaryDirectory(prefix="videoclf-submit-") as tmp:
            package = compile_pipeline(Path(tmp) / f"{PIPELINE_NAME}.yaml", target, image_names,
                                       enable_caching)
            job = vertex_job(package, params, project, region, pipeline_root, run_name, enable_caching)
            job.submit(service_account=service_account)
        result = {"run_id": job.resource_name, "url": job._dashboard_uri()}
        log.info("submitted %s: %s", job.resource_name, result["url"])
        if wait:
            job.wait()
            result["state"] = job.state.name.removeprefix("PIPELINE_STATE_")
    except (GoogleAPIError, GoogleAuthError) as e:
        raise SubmitError(f"Vertex AI Pipelines ({project}, {region}) refused the run: {e}") from e
    return result
