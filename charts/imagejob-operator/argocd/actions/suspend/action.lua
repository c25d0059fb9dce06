-- Stops polling: the operator leaves a suspended ImageJob alone until resumed.
if obj.spec == nil then
  obj.spec = {}
end
obj.spec.suspend = true
return obj
