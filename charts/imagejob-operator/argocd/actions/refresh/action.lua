-- Asks the operator for an immediate poll: it honours each new value of
-- ims.otc.io/requestedAt once and echoes it to status.lastHandledReconcileAt.
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["ims.otc.io/requestedAt"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
