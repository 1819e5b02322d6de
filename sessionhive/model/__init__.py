"""The bottom layer: the data every other layer speaks, and nothing that acts.

Messages, tool calls, usage and turn results (:mod:`.messages`), events
(:mod:`.events`), session and permission configuration (:mod:`.config`,
:mod:`.permissions`), the model configuration (:mod:`.llm_config`), the
errors (:mod:`.errors`), id validation (:mod:`.ids`) and the token estimate
(:mod:`.tokens`). It imports nothing from the rest of sessionhive.
"""
