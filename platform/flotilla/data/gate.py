"""The validation gate as a lakeFS pre-merge hook, so clients cannot bypass it.

The hook is a Lua script that lakeFS runs *inside the server* before every
merge into the protected branch. For each dataset the merge changes, the
source must carry ``validation.json`` that (1) says ``passed`` and (2) holds
the lakeFS checksums of the very ``labels.parquet``, ``manifest.json`` and
image shards being merged. Heavy validation (decoding every image) stays in Python, where the
ingest runs it; the hook only checks the receipt, which costs a few metadata
look-ups. A label edit or a replaced shard after validation changes a checksum,
a delta (:mod:`flotilla.data.deltas`) added after it is in no fingerprint, and either way
the merge is refused until the gate runs again. The hook checks the
receipt, not the data: a client that writes its own passing report with
matching checksums is not stopped by it. A dataset folder the merge changes that
has files but no ``manifest.json`` is refused too (it used to be skipped, so
anything put there without a manifest merged unchecked); a merge that removes a
dataset entirely needs no receipt.

Limit (a lakeFS property): hooks of a merge are read from the *source* commit,
so a client that deliberately deletes ``_lakefs_actions/`` on its branch skips
the hook; restrict writes to that prefix (lakeFS RBAC) where that matters.
"""

from __future__ import annotations

import uuid

from flotilla.errors import ConflictError, NotFoundError
from flotilla.hub.experiment import SCRATCH
from flotilla.hub.repo import Repo
from flotilla.lineage import GateInstall

ACTION_PATH = "_lakefs_actions/flotilla-data-gate.yaml"

_LUA = r"""
local lakefs = require("lakefs")
local json = require("encoding/json")
local repo = action.repository_id
local src = action.source_ref
local code, diff = lakefs.diff_refs(repo, action.branch_id, src, "", "datasets/", "/", 1000)
if code ~= 200 then
  error("flotilla data gate: cannot diff the merge (HTTP " .. tostring(code) .. ")")
end
local problems = {}
for _, d in ipairs(diff.results or {}) do
  -- lakeFS's Lua has no string.match: cut "datasets/<name>/" by hand
  local p = d.path
  local name = nil
  if string.sub(p, 1, 9) == "datasets/" and string.sub(p, -1) == "/" then
    name = string.sub(p, 10, -2)
    if name == "" or string.find(name, "/", 1, true) ~= nil then name = nil end
  end
  if name ~= nil then
    local prefix = "datasets/" .. name .. "/"
    local mcode = lakefs.stat_object(repo, src, prefix .. "manifest.json")
    if mcode ~= 200 then
      -- no manifest: fine only if nothing is left under the prefix (the merge removes the dataset);
      -- files without a manifest are a dataset the gate cannot check, so they are refused
      local lcode, page = lakefs.list_objects(repo, src, "", prefix, "", 1)
      if lcode ~= 200 then
        table.insert(problems, name .. ": cannot list the dataset (HTTP " .. tostring(lcode) .. ")")
      elseif page ~= nil and page.results ~= nil and #page.results > 0 then
        table.insert(problems, name .. ": files without a manifest.json (not a dataset the gate can check)")
      end
    else
      local rcode, body = lakefs.get_object(repo, src, prefix .. "validation.json")
      if rcode ~= 200 then
        table.insert(problems, name .. ": no validation report")
      else
        local report = json.unmarshal(body)
        if not report.passed then
          table.insert(problems, name .. ": validation failed")
        elseif report.fingerprint == nil or report.fingerprint["labels.parquet"] == nil then
          table.insert(problems, name .. ": validation report has no fingerprint")
        else
          for f, want in pairs(report.fingerprint) do
            local scode, st = lakefs.stat_object(repo, src, prefix .. f)
            local got = "missing"
            if scode == 200 then got = json.unmarshal(st).checksum end
            if got ~= want then
              table.insert(problems, name .. ": " .. f .. " changed after validation")
            end
          end
          -- a delta (append, label change) written after validation is in no fingerprint: list them
          local dcode, dpage = lakefs.list_objects(repo, src, "", prefix .. "deltas/", "", 1000)
          if dcode ~= 200 then
            table.insert(problems, name .. ": cannot list its deltas (HTTP " .. tostring(dcode) .. ")")
          elseif dpage ~= nil and dpage.results ~= nil then
            for _, o in ipairs(dpage.results) do
              local rel = string.sub(o.path, string.len(prefix) + 1)
              if report.fingerprint[rel] == nil then
                table.insert(problems, name .. ": " .. rel .. " added after validation")
              end
            end
          end
        end
      end
    end
  end
end
if #problems > 0 then
  error("flotilla data gate refused the merge: " .. table.concat(problems, "; ") ..
        ". Run 'flotilla data validate --merge' on the source branch.")
end
"""


def action_yaml(branch: str) -> str:
    import yaml

    return yaml.safe_dump(
        {
            "name": "flotilla data gate",
            "description": "Only datasets that passed flotilla's validation gate merge into " + branch,
            "on": {"pre-merge": {"branches": [branch]}},
            "hooks": [{"id": "validated_datasets_only", "type": "lua", "properties": {"script": _LUA}}],
        },
        sort_keys=False,
    )


def require_clean(repo: Repo, branch: str, doing: str) -> None:
    """Refuse to go on while ``branch`` has uncommitted changes.

    Whatever is staged on a protected branch has passed no gate: committing there would land it
    ungated, and lakeFS refuses every merge into a dirty branch anyway (after an ingest has done all
    its work). So say so up front, naming the paths and the fix.
    """
    staged = repo.uncommitted(branch)
    if not staged:
        return
    shown = "".join(f"\n  - {c.type}: {c.path}" for c in staged[:20])
    more = f"\n  ... and {len(staged) - 20} more" if len(staged) > 20 else ""
    raise ConflictError(
        f"cannot {doing}: {branch!r} in repository {repo.name!r} has {len(staged)} uncommitted change(s), "
        f"which no validation gate has seen:{shown}{more}",
        hint=f"commit them if they are wanted ('lakectl commit lakefs://{repo.name}/{branch}', or Repo.commit), "
        f"or reset them ('lakectl branch reset lakefs://{repo.name}/{branch}'), then run this again",
    )


def install_gate(repo: Repo, branch: str = "main") -> bool:
    """Make sure ``branch``'s committed head carries the current pre-merge hook; True if it was installed now.

    The hook is committed on a temporary branch cut from ``branch``'s committed head and merged in, so
    the install commits nothing but the hook: committing on ``branch`` itself would also commit whatever
    else is staged there, ungated. The check reads the committed head, not the staging area, so a hook
    left staged by an interrupted install is not mistaken for an installed one. ``branch`` must have no
    uncommitted changes (:func:`require_clean`).
    """
    wanted = action_yaml(branch).encode()
    head = repo.resolve(branch)
    try:
        if repo.get(head, ACTION_PATH) == wanted:
            return False
    except NotFoundError:
        pass
    require_clean(repo, branch, "install the data validation gate")
    with repo.transact(
        f"{branch}-{uuid.uuid4().hex[:12]}",
        head,
        prefix="gate-install-",
        retention=SCRATCH,
    ) as install:
        repo.put(install.branch, ACTION_PATH, wanted)
        repo.commit(install.branch, "Install flotilla's data validation gate (pre-merge hook)", GateInstall().to_metadata())
        # allow_empty: a concurrent install may have merged the same hook first
        repo.merge(
            install.branch,
            branch,
            f"Install flotilla's data validation gate on {branch}",
            GateInstall().to_metadata(),
            allow_empty=True,
        )
    return True
