-- Argo CD health for argoproj.io/Application, for an app of apps. Argo CD stopped judging Applications in
-- v1.8, so without this a parent's sync waves do not wait: the model would be applied before its CRD.
-- A child counts as done when it is Synced and its own health says so; a child whose last sync failed is
-- Degraded, not Progressing for ever. A missing or mistyped field never makes the script fail.
local hs = {status = "Progressing", message = "Waiting for the Application to sync"}

local function text(value)
  if type(value) == "string" then
    return value
  end
  return ""
end

local status = obj.status
if type(status) ~= "table" or type(status.sync) ~= "table" or type(status.health) ~= "table" then
  return hs
end
if status.sync.status ~= "Synced" then
  local operation = type(status.operationState) == "table" and status.operationState or {}
  -- Failed: the sync ran and was refused or a resource failed; Error: it could not run. A retry shows Running.
  if operation.phase == "Failed" or operation.phase == "Error" then
    return {status = "Degraded", message = "Sync " .. operation.phase .. ": " .. text(operation.message)}
  end
  hs.message = "Sync status " .. (text(status.sync.status) ~= "" and status.sync.status or "unknown")
  return hs
end
if text(status.health.status) == "" then
  hs.message = "Waiting for the Application's health"
  return hs
end
hs.status = status.health.status
hs.message = text(status.health.message)
return hs
