-- Argo CD action "pause" for lambda.rollouts.dev/LambdaRollout:
-- hold the rollout where it is, like spec.paused but without a commit to Git.
--
-- Manual actions go through the lambda.rollouts.dev/action annotation, never the spec, so Git
-- stays the one source of what is rolled out. The operator applies the action, acknowledges it
-- in status.lastAction and removes the annotation. A value may add ":<id>" for the
-- acknowledgement to repeat; Argo CD's Lua sandbox has no clock or random source to make one,
-- so the bare action name is written. Argo CD patches the difference between the object it
-- passed in and the one returned: this annotation and nothing else.
if type(obj.metadata.annotations) ~= "table" then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["lambda.rollouts.dev/action"] = "pause"
return obj
