"""An S3-compatible bucket as the embedded hub's blockstore, instead of its local folder.

The embedded hub keeps objects on local disk, which lakeFS cannot presign; presigned reads
(:mod:`flotilla.hub.presign`) need a blockstore that can. This is what the tests and
``bench/presigned_reads.py`` run the embedded hub on: an S3 API server on loopback (moto), path-style
addressing, static keys. A production hub is configured by its operator, not by flotilla
(docs/scale-out.md); this stays small on purpose.

The keys are written only into the hub's config file, which is 0600 like the rest of its state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class S3Blockstore:
    """lakeFS's ``blockstore.s3`` settings for one bucket at ``endpoint`` (``http://127.0.0.1:PORT``).

    ``pre_signed_endpoint``: where presigned URLs point instead of ``endpoint`` (lakeFS's own option, for a VPC
    endpoint; the tests point it at an address that fails, to exercise the fallback to the gateway)."""

    endpoint: str
    bucket: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    region: str = "us-east-1"
    pre_signed_endpoint: str | None = None

    def namespace(self, repo: str) -> str:
        """The storage namespace a repository named ``repo`` gets in this bucket."""
        return f"s3://{self.bucket}/{repo}"

    def config(self) -> dict[str, Any]:
        """The ``blockstore`` section of the lakeFS config file."""
        s3: dict[str, Any] = {
            "endpoint": self.endpoint,
            "force_path_style": True,  # bucket in the path: a loopback server has no per-bucket host names
            "region": self.region,
            "credentials": {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key},
        }
        if self.pre_signed_endpoint:
            s3["pre_signed_endpoint"] = self.pre_signed_endpoint
        return {"type": "s3", "s3": s3}
