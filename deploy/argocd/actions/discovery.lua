-- Argo CD resource actions for lambda.rollouts.dev/LambdaRollout: which ones make sense now.
--
-- Every action is listed, so the menu always looks the same; those that cannot apply in the
-- current phase are disabled. The operator would reject them anyway (status.lastAction says why),
-- but a disabled item saves a click that does nothing. The phases are the operator's
-- status.phase: Progressing, Paused, Healthy, Degraded.
--
-- Argo CD's Lua sandbox has no `string` library, and any status field may be missing (a rollout
-- the operator has not seen yet has no status), so every read is guarded.

-- t[key] when t is a table; nil otherwise (indexing nil or a string would raise an error).
local function get(t, key)
  if type(t) == "table" then
    return t[key]
  end
  return nil
end

local status = get(obj, "status")
local phase = get(status, "phase")
local progressing = phase == "Progressing"
-- Paused covers every hold: an indefinite pause step, spec.paused, the pause action, an
-- inconclusive analysis, waiting for confirmPromotion.
local paused = phase == "Paused"
local paused_by_action = get(status, "pausedByAction") == true
-- spec.paused is lifted in Git only: the operator refuses to promote past it.
local paused_by_spec = get(get(obj, "spec"), "paused") == true
-- abortedAt marks an attempt that was rolled back or aborted: the only failures a retry of the
-- same version can help. A failed pre-flight check (no abortedAt) is retried by the operator
-- on its own, and is fixed by fixing the spec or AWS.
local aborted_at = get(status, "abortedAt")
local rolled_back = phase == "Degraded" and type(aborted_at) == "string" and aborted_at ~= ""

-- Argo CD versions that do not know iconClass or displayName ignore them.
local function action(enabled, icon, name)
  return {disabled = not enabled, iconClass = "fa fa-fw " .. icon, displayName = name}
end

local actions = {}
-- Move past the current wait (a pause, an analysis step, a hold, a gate), or finish at once.
local promotable = (progressing or paused) and not paused_by_spec
actions["promote"] = action(promotable, "fa-forward", "Promote one step")
actions["promote-full"] = action(promotable, "fa-fast-forward", "Promote fully")
-- All traffic back to the stable version; the rollout then holds like after a rollback.
actions["abort"] = action(progressing or paused, "fa-times-circle", "Abort")
actions["retry"] = action(rolled_back, "fa-redo-alt", "Retry")
-- Pause holds a moving rollout; resume undoes only the pause action (not spec.paused, which
-- lives in Git, nor a pause step, which promote moves past).
actions["pause"] = action(progressing and not paused_by_action, "fa-pause", "Pause")
actions["resume"] = action(paused_by_action, "fa-play", "Resume")
return actions
