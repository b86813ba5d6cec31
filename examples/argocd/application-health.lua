-- Argo CD health for argoproj.io/Application, for an app of apps. Argo CD stopped judging Applications in
-- v1.8, so without this a parent's sync waves do not wait: the model would be applied before its CRD.
-- A child counts as done when it is Synced and its own health says so.
local hs = {status = "Progressing", message = "Waiting for the Application to sync"}
if obj.status == nil or obj.status.sync == nil or obj.status.health == nil then
  return hs
end
if obj.status.sync.status ~= "Synced" then
  hs.message = "Sync status " .. obj.status.sync.status
  return hs
end
hs.status = obj.status.health.status
hs.message = obj.status.health.message or ""
return hs
