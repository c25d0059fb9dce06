-- Argo CD resource actions for ims.otc.io/ImageJob (Lua 5.1, as gopher-lua
-- runs). Install: argocd-cm key
-- `resource.customizations.actions.ims.otc.io_ImageJob` (see the chart
-- README). Tests: action_test.yaml and testdata/.
--
--   refresh  asks for an immediate poll (ims.otc.io/requestedAt)
--   suspend  sets spec.suspend: the operator stops polling
--   resume   clears spec.suspend
local actions = {}
local suspended = obj.spec ~= nil and obj.spec.suspend == true
-- A suspended ImageJob does not poll, so a refresh would only be echoed.
actions["refresh"] = { ["disabled"] = suspended, ["iconClass"] = "fa fa-fw fa-sync" }
actions["suspend"] = { ["disabled"] = suspended, ["iconClass"] = "fa fa-fw fa-pause" }
actions["resume"] = { ["disabled"] = not suspended, ["iconClass"] = "fa fa-fw fa-play" }
return actions
