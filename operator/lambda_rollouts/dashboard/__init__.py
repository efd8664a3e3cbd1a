"""``kubectl lambdarollout dashboard``: a local web page of the rollouts, live, with the plugin's actions.

- ``view``: what the page shows of one rollout (``RolloutView``, filled by the plugin's own readers)
  and what the server needs from the plugin (``Source``: kubectl's command lines, the readers, the
  actions). Light: the plugin imports it on every run.
- ``server``: the aiohttp server, its watches and its safety rules; imported only by the command.
- ``page.html``: the page, plain HTML, CSS and JavaScript with an inline SVG chart (package data).
"""
