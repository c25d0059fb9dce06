-- Polling starts again at the next reconcile (the spec change triggers one).
if obj.spec ~= nil then
  obj.spec.suspend = false
end
return obj
