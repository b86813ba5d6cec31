-- Argo CD health for bernini.dev/BerniniDeployment, from the operator's conditions.
-- Progressing until the operator has acted on the current generation; Suspended when spec.suspend;
-- Degraded when artifacts, rendering or a starting pod failed (a user must fix something);
-- Healthy when Ready.
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.status.observedGeneration == nil or obj.metadata.generation == nil
    or obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "The operator has not acted on the latest spec yet"
  return hs
end
local conditions = {}
for _, condition in ipairs(obj.status.conditions) do
  conditions[condition.type] = condition
end
local ready = conditions["Ready"]
if ready ~= nil and ready.reason == "Suspended" then
  return {status = "Suspended", message = ready.message}
end
-- A failing pod is Degraded even while the previous version serves (Ready): the rollout is stuck.
for _, blocking in ipairs({"ArtifactsVerified", "Rendered", "PodsHealthy"}) do
  local condition = conditions[blocking]
  if condition ~= nil and condition.status == "False" then
    return {status = "Degraded", message = condition.reason .. ": " .. condition.message}
  end
end
if ready ~= nil and ready.status == "True" then
  return {status = "Healthy", message = ready.message}
end
if ready ~= nil then
  hs.message = ready.reason .. ": " .. ready.message
end
return hs
