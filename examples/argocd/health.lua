-- Argo CD health for bernini.dev/BerniniDeployment, from the operator's conditions.
-- Progressing until the operator has acted on the current generation, and while it waits for KubeRay;
-- Suspended when spec.suspend; Degraded when a condition is False for a failure (artifacts, rendering, a
-- starting pod, an invalid spec: a user must fix something) or Ray Serve failed to deploy a stage;
-- Healthy when Ready. A missing or mistyped field never makes the script fail.
local hs = {status = "Progressing", message = "Waiting for the operator"}
-- False for these is waiting or the consequence of another condition's failure, not a failure of its own
-- (the waiting and consequence reasons of bernini/api/reasons.py; a test holds this list to it).
local waiting = {RayServiceNotReady = true, BlockedByPreflight = true, Suspended = true}
-- Ray Serve's words for a deployment that failed to start or to update.
local serve_failures = {UNHEALTHY = true, DEPLOY_FAILED = true}

local function text(value)
  if type(value) == "string" then
    return value
  end
  return ""
end

local function list(value)
  if type(value) == "table" then
    return value
  end
  return {}
end

local function explained(condition)
  return text(condition.reason) .. ": " .. text(condition.message)
end

local status = obj.status
if type(status) ~= "table" or type(status.conditions) ~= "table" then
  return hs
end
local generation = type(obj.metadata) == "table" and obj.metadata.generation or nil
if type(status.observedGeneration) ~= "number" or type(generation) ~= "number"
    or status.observedGeneration < generation then
  hs.message = "The operator has not acted on the latest spec yet"
  return hs
end
local conditions = {}
for _, condition in ipairs(status.conditions) do
  if type(condition) == "table" and type(condition.type) == "string" then
    conditions[condition.type] = condition
  end
end
local ready = conditions["Ready"]
if ready ~= nil and ready.reason == "Suspended" then
  return {status = "Suspended", message = text(ready.message)}
end
-- A failing pod is Degraded even while the previous version serves (Ready): the rollout is stuck. Ready is
-- the only condition of an invalid spec. RayServiceReady is KubeRay's, whose False is a wait (Initializing).
for _, name in ipairs({"ArtifactsVerified", "Rendered", "PodsHealthy", "Ready"}) do
  local condition = conditions[name]
  if condition ~= nil and condition.status == "False" and not waiting[text(condition.reason)] then
    return {status = "Degraded", message = explained(condition)}
  end
end
for _, stage in ipairs(list(status.stages)) do
  if type(stage) == "table" and serve_failures[text(stage.status)] then
    return {status = "Degraded", message = "Ray Serve deployment " .. text(stage.name) .. " is "
      .. text(stage.status) .. ": " .. text(stage.message)}
  end
end
if ready ~= nil and ready.status == "True" then
  return {status = "Healthy", message = text(ready.message)}
end
if ready ~= nil then
  hs.message = explained(ready)
end
return hs
