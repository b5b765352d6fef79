"""The validation gate as a lakeFS pre-merge hook, so clients cannot bypass it.

The hook is a Lua script that lakeFS runs *inside the server* before every
merge into the protected branch. For each dataset the merge changes, the
source must carry ``validation.json`` that (1) says ``passed`` and (2) holds
the lakeFS checksums of the very ``labels.parquet``, ``manifest.json`` and
image shards being merged. Heavy validation (decoding every image) stays in Python, where the
ingest runs it; the hook only checks the receipt, which costs a few metadata
look-ups. A label edit or a replaced shard after validation changes a checksum
and the merge is refused until the gate runs again. The hook checks the
receipt, not the data: a client that writes its own passing report with
matching checksums is not stopped by it.

Limit (a lakeFS property): hooks of a merge are read from the *source* commit,
so a client that deliberately deletes ``_lakefs_actions/`` on its branch skips
the hook; restrict writes to that prefix (lakeFS RBAC) where that matters.
"""

from __future__ import annotations

from flotilla.errors import NotFoundError
from flotilla.hub.repo import Repo

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
    if mcode == 200 then
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


def install_gate(repo: Repo, branch: str = "main") -> bool:
    """Commit the pre-merge hook onto ``branch`` unless it is already there (and current)."""
    wanted = action_yaml(branch).encode()
    try:
        if repo.get(branch, ACTION_PATH) == wanted:
            return False
    except NotFoundError:
        pass
    repo.put(branch, ACTION_PATH, wanted)
    repo.commit(branch, "Install flotilla's data validation gate (pre-merge hook)", {"flotilla.kind": "gate"})
    return True
