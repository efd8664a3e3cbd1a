-- Argo CD health check for lambda.rollouts.dev/LambdaRollout.
--
-- Argo CD runs this with the live object in `obj` and shows the returned `status` and `message`.
-- The operator reports where a rollout stands in status.phase, and why in its Stalled condition:
--
--   status.phase   Argo CD health   why
--   Healthy        Healthy          the alias serves all traffic from spec.version
--   Progressing    Progressing      traffic is moving (or a transient AWS error is being retried)
--   Paused         Suspended        waiting for a person or for data: an indefinite pause step,
--                                   spec.paused, a pause action, an inconclusive analysis,
--                                   confirmPromotion
--   Degraded       Degraded         Stalled=True: rolled back (analysis, hook, deadline) or
--                                   aborted, held until a person acts; or a pre-flight check
--                                   failed (VersionNotFound, AlarmNotFound, ...), retried until
--                                   fixed
--
-- A status the operator wrote for an older generation says nothing about the current spec, so
-- until status.observedGeneration catches up with metadata.generation the rollout is Progressing.
--
-- Argo CD's Lua sandbox has no `string` library (so no string methods either), and any field may
-- be missing (a rollout the operator has not seen yet, a hand-edited status): a Lua error would
-- show the resource as Unknown instead of its health, so every read is guarded.

-- t[key] when t is a table; nil otherwise (indexing nil or a string would raise an error).
local function get(t, key)
  if type(t) == "table" then
    return t[key]
  end
  return nil
end

-- A string field, or "" when it is missing or not a string.
local function text(value)
  if type(value) == "string" then
    return value
  end
  return ""
end

-- The condition of the given type in status.conditions, or nil.
local function condition(status, kind)
  local conditions = get(status, "conditions")
  if type(conditions) ~= "table" then
    return nil
  end
  for _, item in ipairs(conditions) do
    if get(item, "type") == kind then
      return item
    end
  end
  return nil
end

-- "reason: message", leaving out whichever part is empty.
local function prefixed(reason, message)
  if reason == "" then
    return message
  end
  if message == "" then
    return reason
  end
  return reason .. ": " .. message
end

local hs = {}
local status = get(obj, "status")
local generation = get(get(obj, "metadata"), "generation")
local observed = get(status, "observedGeneration")

-- Not observed yet: no status at all, no observedGeneration, or one older than the spec.
if type(observed) ~= "number" or (type(generation) == "number" and observed < generation) then
  hs.status = "Progressing"
  if type(generation) == "number" then
    hs.message = "waiting for the operator to observe generation " .. tostring(generation)
  else
    hs.message = "waiting for the operator to observe this rollout"
  end
  return hs
end

local phase = get(status, "phase")
local message = text(get(status, "message"))
local stalled = condition(status, "Stalled")
-- The reason is the machine-readable cause of a failure (AnalysisFailed, Aborted,
-- VersionNotFound, ...): shown first, since the message may be long.
local stalled_reason = text(get(stalled, "reason"))

if phase == "Healthy" then
  hs.status = "Healthy"
  hs.message = message
elseif phase == "Progressing" then
  hs.status = "Progressing"
  hs.message = message
elseif phase == "Paused" then
  -- Suspended, not Progressing: nothing moves until a person (or the data) lets it.
  hs.status = "Suspended"
  hs.message = message
elseif phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = prefixed(stalled_reason, message)
elseif get(stalled, "status") == "True" then
  -- No phase this script knows (a newer or older operator): fall back on the kstatus conditions.
  hs.status = "Degraded"
  hs.message = prefixed(stalled_reason, message)
elseif get(condition(status, "Ready"), "status") == "True" then
  hs.status = "Healthy"
  hs.message = message
else
  hs.status = "Progressing"
  hs.message = message
end
return hs
