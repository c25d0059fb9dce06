-- Argo CD health check for ims.otc.io/ImageJob (Lua 5.1, as gopher-lua runs).
-- Install: argocd-cm key `resource.customizations.health.ims.otc.io_ImageJob`
-- (see the chart README). Fixtures: health_test.yaml and testdata/.
--
--   spec.suspend true                      -> Suspended
--   no status / status older than the spec -> Progressing
--   Failed=True or Stalled=True            -> Degraded ("reason: message")
--   Ready=True                             -> Healthy
--   anything else (INIT, RUNNING, retry)   -> Progressing
local hs = {}

local function condition(conditions, type_)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.reason ~= nil and c.reason ~= "" then
    if c.message ~= nil and c.message ~= "" then
      return c.reason .. ": " .. c.message
    end
    return c.reason
  end
  return c.message or ""
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: polling is paused"
  return hs
end

local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

-- A status written for an older spec says nothing about the current one.
local generation = obj.metadata and obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

for _, type_ in ipairs({ "Failed", "Stalled" }) do
  local c = condition(status.conditions, type_)
  if c ~= nil and c.status == "True" then
    hs.status = "Degraded"
    hs.message = describe(c)
    return hs
  end
end

local ready = condition(status.conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

-- While retrying after a transient error, Reconciling says why.
local reconciling = condition(status.conditions, "Reconciling")
hs.status = "Progressing"
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = describe(reconciling)
elseif ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the operator to report status"
end
return hs
