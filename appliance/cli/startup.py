"""Start-up trims for short-lived commands (``appliance detect`` is timed against a peer tool).

WHY: the first time pydantic builds a model class it looks for pydantic plugins (entry points
of the group ``pydantic``): it imports :mod:`importlib.metadata` (which pulls in ``email``,
``zipfile``, ``csv``, ...) and reads the metadata of every installed distribution. That is
about a tenth of all the work ``appliance detect --json`` does, for plugins appliance never
uses. pydantic's own switch (``PYDANTIC_DISABLE_PLUGINS``) skips the scan but still imports
``importlib.metadata``, so :func:`skip_pydantic_plugins` supplies the plugin loader's one
function instead. Output and models are unchanged: only plugin discovery is skipped.

Whoever wants pydantic plugins in an appliance process sets ``PYDANTIC_DISABLE_PLUGINS``
(to any value, even empty): then pydantic's own loader runs and honours it.
``tests/detect/test_startup.py`` checks that the loader contract relied on here still holds
for the installed pydantic.
"""

from __future__ import annotations

import os
import sys
import types

LOADER_MODULE = "pydantic.plugin._loader"


def skip_pydantic_plugins() -> bool:
    """Make pydantic find no plugins in this process, without importing importlib.metadata.

    Call before the first pydantic model class is created. Returns True when the loader was
    replaced; False when the user set ``PYDANTIC_DISABLE_PLUGINS``, the real loader is already
    imported, or the installed pydantic is not a 2.x release (whose
    ``pydantic.plugin._schema_validator`` does ``from ._loader import get_plugins``).
    """
    if "PYDANTIC_DISABLE_PLUGINS" in os.environ or LOADER_MODULE in sys.modules:
        return False
    try:
        from pydantic.version import VERSION
    except ImportError:
        return False
    if not VERSION.startswith("2."):
        return False
    loader = types.ModuleType(LOADER_MODULE, "pydantic plugin loader replaced by appliance.cli.startup: no plugins")
    loader.PYDANTIC_ENTRY_POINT_GROUP = "pydantic"
    loader.get_plugins = lambda: ()
    sys.modules[LOADER_MODULE] = loader
    return True
