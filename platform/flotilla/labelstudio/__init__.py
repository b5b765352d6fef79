"""Labelling in a real Label Studio: its own virtualenv, a local server flotilla runs, a small REST client."""

from flotilla.labelstudio.client import Annotation, LabelStudioClient, Project, S3Storage, Task
from flotilla.labelstudio.install import LABEL_STUDIO_VERSION, ensure_installed, find_install
from flotilla.labelstudio.local import down, local_client, local_server, status, up
from flotilla.labelstudio.server import LabelStudioCredentials, LabelStudioServer, LabelStudioStatus

__all__ = [
    "LABEL_STUDIO_VERSION",
    "Annotation",
    "LabelStudioClient",
    "LabelStudioCredentials",
    "LabelStudioServer",
    "LabelStudioStatus",
    "Project",
    "S3Storage",
    "Task",
    "down",
    "ensure_installed",
    "find_install",
    "local_client",
    "local_server",
    "status",
    "up",
]
