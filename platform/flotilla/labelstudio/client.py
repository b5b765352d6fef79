"""A small typed client for the Label Studio REST API: what an active-learning round needs, no more.

Plain ``requests`` rather than ``label-studio-sdk``: the SDK's pins (numpy < 2.3 through opencv)
clash with flotilla's stack, and the handful of calls a round makes are stable REST. Every HTTP or
connection failure becomes a :class:`~flotilla.errors.LabelStudioError` that says what to do;
the token and any storage keys never appear in a message, a repr or a log line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from flotilla.errors import (
    LabelStudioAuthError,
    LabelStudioError,
    LabelStudioNotFoundError,
    LabelStudioUnavailableError,
)

PAGE_SIZE = 100


@dataclass(frozen=True)
class Project:
    id: int
    title: str
    label_config: str = field(default="", repr=False)


@dataclass(frozen=True)
class Task:
    id: int
    data: dict[str, Any]
    meta: dict[str, Any]
    total_annotations: int
    cancelled_annotations: int


@dataclass(frozen=True)
class Annotation:
    id: int
    task: int
    result: list[dict[str, Any]]


@dataclass(frozen=True)
class S3Storage:
    id: int
    title: str
    bucket: str
    prefix: str


class LabelStudioClient:
    """Talks to one Label Studio with one API token (``Authorization: Token <token>``)."""

    def __init__(self, url: str, token: str, *, credentials_path: Path | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._secrets: set[str] = {token}
        self._credentials_path = credentials_path
        self._timeout = timeout
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Token {token}"

    def __repr__(self) -> str:
        return f"LabelStudioClient({self.url!r})"

    # ---- plumbing --------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def _send(self, method: str, path: str, *, what: str, **kwargs: Any) -> requests.Response:
        try:
            resp = self._session.request(method, f"{self.url}{path}", timeout=self._timeout, **kwargs)
        except requests.ConnectionError:
            raise LabelStudioUnavailableError(
                f"Label Studio does not answer at {self.url} ({what})",
                hint="Label Studio is not running: start it with 'flotilla label up'",
            ) from None
        except requests.Timeout:
            raise LabelStudioUnavailableError(
                f"Label Studio at {self.url} did not answer within {self._timeout:.0f}s ({what})",
                hint="check 'flotilla label status' and its log; restart with 'flotilla label down' and 'flotilla label up'",
            ) from None
        if resp.status_code == 401:
            where = f"check {self._credentials_path}" if self._credentials_path else "check the token you passed"
            raise LabelStudioAuthError(
                f"Label Studio at {self.url} rejected the API token (HTTP {resp.status_code}) ({what})",
                hint=f"run 'flotilla label down' then 'flotilla label up' for flotilla's own server, or {where}",
            )
        if resp.status_code == 404:
            raise LabelStudioNotFoundError(
                f"{what}: not found in Label Studio at {self.url} (deleted, or the wrong id)",
                hint="list what exists in the Label Studio web UI or with the client's list methods",
            )
        if resp.status_code >= 400:
            body = self._scrub(resp.text.strip())[:500]
            raise LabelStudioError(f"Label Studio refused {what} (HTTP {resp.status_code}): {body}")
        return resp

    def _request(self, method: str, path: str, *, what: str, **kwargs: Any) -> Any:
        resp = self._send(method, path, what=what, **kwargs)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise LabelStudioError(f"Label Studio answered {what} with something that is not JSON") from None

    def _pages(self, path: str, params: Mapping[str, Any], *, key: str, what: str) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            try:
                body = self._request("GET", path, params={**params, "page": page, "page_size": PAGE_SIZE}, what=what)
            except LabelStudioNotFoundError:
                if page > 1:  # Label Studio answers 404 for the page after the last one
                    return
                raise
            items = body if isinstance(body, list) else body.get(key, [])
            yield from items
            total = None if isinstance(body, list) else body.get("total", body.get("count"))
            if isinstance(body, list) or not items or (total is not None and page * PAGE_SIZE >= total):
                return
            page += 1

    # ---- users and projects ----------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        """The user the token belongs to: the cheapest call that proves the token works."""
        user: dict[str, Any] = self._request("GET", "/api/current-user/whoami", what="who am I")
        return user

    def projects(self) -> list[Project]:
        return [_project(p) for p in self._pages("/api/projects/", {}, key="results", what="listing projects")]

    def project(self, project_id: int) -> Project:
        return _project(self._request("GET", f"/api/projects/{project_id}/", what=f"project {project_id}"))

    def find_project(self, title: str) -> Project | None:
        return next((p for p in self.projects() if p.title == title), None)

    def ensure_project(self, title: str, label_config: str, **options: Any) -> Project:
        """The project called ``title`` (created with ``label_config`` when there is none): a rerun reuses it."""
        found = self.find_project(title)
        if found:
            return found
        body = {"title": title, "label_config": label_config, **options}
        return _project(self._request("POST", "/api/projects/", json=body, what=f"creating project {title!r}"))

    def delete_project(self, project_id: int) -> None:
        self._request("DELETE", f"/api/projects/{project_id}/", what=f"deleting project {project_id}")

    # ---- tasks and annotations ---------------------------------------------------------------
    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        """Import tasks (``{"data": ..., "meta": ..., "predictions": [...]}``); the new tasks' ids, in order."""
        body = self._request(
            "POST",
            f"/api/projects/{project_id}/import",
            params={"return_task_ids": "true"},
            json=list(tasks),
            what=f"importing {len(tasks)} task(s) into project {project_id}",
        )
        ids = body.get("task_ids") if isinstance(body, dict) else None
        if ids is None or len(ids) != len(tasks):
            raise LabelStudioError(f"Label Studio did not return the ids of the {len(tasks)} imported task(s): {body!r}"[:500])
        return [int(i) for i in ids]

    def tasks(self, project_id: int) -> list[Task]:
        params = {"project": project_id, "fields": "all"}
        return [_task(t) for t in self._pages("/api/tasks/", params, key="tasks", what=f"listing tasks of project {project_id}")]

    def task(self, task_id: int) -> Task:
        return _task(self._request("GET", f"/api/tasks/{task_id}/", what=f"task {task_id}"))

    def read_file(self, url: str) -> bytes:
        """The bytes behind a task's file URL as Label Studio serves them to the browser (a storage proxies them)."""
        path = url[len(self.url) :] if url.startswith(self.url) else url
        return self._send("GET", path, what=f"reading {path}").content

    def delete_task(self, task_id: int) -> None:
        self._request("DELETE", f"/api/tasks/{task_id}/", what=f"deleting task {task_id}")

    def annotate(self, task_id: int, result: Iterable[Mapping[str, Any]], *, cancelled: bool = False) -> Annotation:
        """Submit an annotation on a task, as a person would in the UI (the scripted annotator)."""
        body = {"result": list(result), "was_cancelled": cancelled}
        created = self._request("POST", f"/api/tasks/{task_id}/annotations/", json=body, what=f"annotating task {task_id}")
        return Annotation(int(created["id"]), int(created.get("task") or task_id), list(created.get("result") or []))

    def predictions(self, task_id: int) -> list[dict[str, Any]]:
        """A task's predictions (pre-annotations): ``model_version``, ``score``, ``result`` (the export only lists their ids)."""
        found = self._request("GET", "/api/predictions/", params={"task": task_id}, what=f"predictions of task {task_id}")
        return [p for p in (found.get("results", found) if isinstance(found, dict) else found) if isinstance(p, dict)]

    def export(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project with its annotations and predictions (Label Studio's JSON export)."""
        body = self._request(
            "GET",
            f"/api/projects/{project_id}/export",
            params={"exportType": "JSON", "download_all_tasks": "true"},
            what=f"exporting project {project_id}",
        )
        if not isinstance(body, list):
            raise LabelStudioError(f"Label Studio's export of project {project_id} is not a list of tasks")
        return body

    # ---- storage ---------------------------------------------------------------------------
    def create_s3_storage(
        self,
        project_id: int,
        *,
        title: str,
        endpoint: str,
        bucket: str,
        prefix: str,
        access_key_id: str,
        secret_access_key: str,
        region: str = "us-east-1",
        regex_filter: str = "",
        use_blob_urls: bool = False,
    ) -> S3Storage:
        """An S3 source storage (lakeFS's S3 gateway: bucket = repository, prefix = ``<ref>/<path>``).

        Tasks imported with ``s3://<bucket>/<prefix>/...`` URLs resolve through it. ``presign`` is off so Label
        Studio proxies the bytes: the browser never needs to reach lakeFS. Label Studio lists the prefix on
        creation, so it must hold at least one object. ``use_blob_urls``: a sync makes one task per object
        (else a sync reads each object as a JSON task).
        """
        self._secrets |= {access_key_id, secret_access_key}
        body = {
            "project": project_id,
            "title": title,
            "s3_endpoint": endpoint,
            "bucket": bucket,
            "prefix": prefix,
            "regex_filter": regex_filter,
            "use_blob_urls": use_blob_urls,
            "presign": False,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
            "region_name": region,
        }
        try:
            created = self._request("POST", "/api/storages/s3/", json=body, what=f"creating S3 storage {title!r}")
        except (LabelStudioAuthError, LabelStudioNotFoundError, LabelStudioUnavailableError):
            raise
        except LabelStudioError as exc:
            raise exc.reword(
                hint=f"Label Studio could not list s3://{bucket}/{prefix} at {endpoint}: check that the endpoint answers, "
                "the bucket (repository) and prefix exist with at least one object there, and the key pair"
            ) from None
        return S3Storage(int(created["id"]), str(created.get("title") or title), bucket, prefix)

    def s3_storages(self, project_id: int) -> list[S3Storage]:
        found = self._request("GET", "/api/storages/s3/", params={"project": project_id}, what="listing S3 storages")
        return [
            S3Storage(int(s["id"]), str(s.get("title") or ""), str(s.get("bucket") or ""), str(s.get("prefix") or ""))
            for s in found
        ]

    def sync_s3_storage(self, storage_id: int) -> None:
        self._request("POST", f"/api/storages/s3/{storage_id}/sync", what=f"syncing S3 storage {storage_id}")


def _project(p: Mapping[str, Any]) -> Project:
    return Project(int(p["id"]), str(p.get("title") or ""), str(p.get("label_config") or ""))


def _task(t: Mapping[str, Any]) -> Task:
    return Task(
        int(t["id"]),
        dict(t.get("data") or {}),
        dict(t.get("meta") or {}),
        int(t.get("total_annotations") or 0),
        int(t.get("cancelled_annotations") or 0),
    )
