"""Where a Kubeflow Pipelines run keeps its artifacts, and with which credentials, found as the
KFP launcher finds them: from the ``kfp-launcher`` ConfigMap of the run's namespace, else the
launcher's defaults. The deploy step hands the same store to the model server, and
``videoclf doctor`` reports it.

Modelled on kubeflow/pipelines 2.17.0 (the same in 2.16.0 and HEAD):
``backend/src/v2/config/env.go`` (the ConfigMap's name, ``defaultPipelineRoot`` and its default
``minio://mlpipeline/v2/artifacts``, the ``providers`` key, the default MinIO session: endpoint
``objectstore.DefaultEndpointInMultiUserMode``, SSL off, Secret ``mlpipeline-minio-artifact``
with keys ``accesskey`` and ``secretkey``), ``backend/src/v2/config/minio.go`` (a ``minio://``
root without a provider, and without a query string, takes that default session) and
``backend/src/v2/config/s3.go`` (a provider's ``default`` endpoint, ``disableSSL`` false unless
set, credentials ``fromEnv`` or a ``secretRef``, and the first ``Overrides`` entry whose bucket
matches and whose key prefix starts the artifact's; no provider at all, or a query string in the
URI: credentials from the environment).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import yaml

from components.storage import S3_SECRET_KEYS

CONFIG_MAP = "kfp-launcher"
DEFAULT_PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"
DEFAULT_ENDPOINT = "seaweedfs.kubeflow:9000"  # objectstore/config.go, since 2.16.0
DEFAULT_SECRET = "mlpipeline-minio-artifact"
DEFAULT_KEYS = ("accesskey", "secretkey")


@dataclasses.dataclass(frozen=True)
class S3Store:
    """An S3-compatible store and where its credentials are."""

    endpoint: str  # a URL, e.g. http://seaweedfs.kubeflow:9000; empty: AWS's own
    secret: str  # the Secret holding the credentials; empty: the launcher's environment holds them
    access_key_key: str = DEFAULT_KEYS[0]
    secret_key_key: str = DEFAULT_KEYS[1]
    region: str = ""

    @property
    def secret_keys(self) -> dict[str, str]:
        """The Secret's keys and the AWS variables they are given as."""
        return {self.access_key_key: "AWS_ACCESS_KEY_ID", self.secret_key_key: "AWS_SECRET_ACCESS_KEY"}


def pipeline_root(config: dict | None) -> str:
    """The default pipeline root: the ConfigMap's ``defaultPipelineRoot``, else the launcher's."""
    return (config or {}).get("defaultPipelineRoot") or DEFAULT_PIPELINE_ROOT


def lowered(value):
    """The value with every mapping's keys in lower case: Go's encoding/json, which the launcher's
    YAML goes through, matches field names without regard to case (``overrides``, ``Overrides``)."""
    if isinstance(value, dict):
        return {str(key).lower(): lowered(item) for key, item in value.items()}
    return [lowered(item) for item in value] if isinstance(value, list) else value


def store_of(uri: str, config: dict | None) -> S3Store | None:
    """The store of a ``minio://`` or ``s3://`` artifact URI as the launcher would open it, with
    ``config`` the ConfigMap's data (None where the namespace has none); None for other URIs.
    Raises ValueError where the launcher would refuse the ConfigMap's providers."""
    scheme, _, rest = uri.partition("://")
    if scheme not in ("minio", "s3"):
        return None
    path, _, query = rest.partition("?")
    bucket, _, prefix = path.partition("/")
    provider = lowered(yaml.safe_load((config or {}).get("providers") or "") or {}).get(scheme) or {}
    configured = provider.get("default") is not None or provider.get("overrides") is not None
    if scheme == "minio" and not configured and not query:
        return S3Store(f"http://{DEFAULT_ENDPOINT}", DEFAULT_SECRET, region="minio")
    if not configured or query:
        return S3Store("", "")  # fromEnv: the AWS settings of the launcher's own environment
    chosen = provider.get("default") or {}
    if not chosen.get("credentials"):
        raise ValueError(f"the {CONFIG_MAP} ConfigMap's {scheme} provider has no default credentials")
    chosen = {**chosen, "endpoint": chosen.get("endpoint", ""), "region": chosen.get("region", "")}
    for override in provider.get("overrides") or []:
        if override.get("bucketname") == bucket and prefix.startswith(override.get("keyprefix", "")):
            if not override.get("credentials"):
                raise ValueError(f"the {CONFIG_MAP} ConfigMap's {scheme} override for {bucket} has no "
                                 "credentials")
            chosen.update({key: value for key, value in override.items() if value not in (None, "")})
            break
    endpoint = chosen["endpoint"]
    if endpoint and "://" not in endpoint:
        endpoint = f"{'http' if chosen.get('disablessl') else 'https'}://{endpoint}"
    credentials = chosen["credentials"]
    if credentials.get("fromenv"):
        return S3Store(endpoint, "", region=chosen["region"])
    ref = credentials.get("secretref") or {}
    return S3Store(endpoint, ref.get("secretname", ""), ref.get("accesskeykey", DEFAULT_KEYS[0]),
                   ref.get("secretkeykey", DEFAULT_KEYS[1]), chosen["region"])


def serving_store(uri: str, read_config: Callable[[], dict | None], s3_endpoint: str = "",
                  s3_secret: str = "") -> S3Store | None:
    """The store a model server reads the artifact at ``uri`` from: the ``s3_endpoint`` and
    ``s3_secret`` the pipeline was compiled with (every task's, with the Secret's keys
    ``accesskey`` and ``secretkey``), else the launcher's (``store_of``, with the ConfigMap data
    that ``read_config`` reads only then); None for a ``gs://`` or local artifact."""
    if s3_endpoint or s3_secret:
        return S3Store(s3_endpoint, s3_secret, *S3_SECRET_KEYS)
    return store_of(uri, read_config()) if uri.startswith(("minio://", "s3://")) else None
