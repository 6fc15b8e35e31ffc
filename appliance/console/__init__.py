"""The admin console: the box at a glance in a browser (docs/console.md).

``views`` builds each page's data from the same library functions the CLI uses (status, keys,
models, train, releases, the agent's history); ``server`` serves those views as JSON and the
static page behind the box's one sign-in (the gateway's session). Nothing here decides health or
problems itself.
"""
