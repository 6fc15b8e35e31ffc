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

WHY (asyncio): ``pydantic_core.core_schema`` marks functions with
``typing_extensions.deprecated``, whose decorator does ``import asyncio.coroutines`` only to
call ``iscoroutinefunction`` once per decorated function. That imports all of asyncio and
ssl (about 18 ms, a seventh of ``appliance detect --json``) in a process that never runs an
event loop. :func:`import_pydantic_without_asyncio` imports pydantic while a two-attribute
stand-in answers for ``asyncio.coroutines`` (the same answer: ``inspect.iscoroutinefunction``),
then removes the stand-in, so a later ``import asyncio`` loads the real package.
``APPLIANCE_NO_STARTUP_TRIMS=1`` turns both trims off.
"""

from __future__ import annotations

import os
import sys
import types

LOADER_MODULE = "pydantic.plugin._loader"


def trim_startup() -> None:
    """Both trims, in the order they need (before pydantic is imported)."""
    if os.environ.get("APPLIANCE_NO_STARTUP_TRIMS") == "1":
        return
    import_pydantic_without_asyncio()
    skip_pydantic_plugins()


def import_pydantic_without_asyncio() -> bool:
    """Import pydantic (and pydantic_core's schema module) without importing asyncio.

    Returns True when the stand-in was used; False when asyncio or pydantic_core's schema
    module is already imported (nothing to save) or trims are off.
    """
    if os.environ.get("APPLIANCE_NO_STARTUP_TRIMS") == "1":
        return False
    if "asyncio" in sys.modules or "pydantic_core.core_schema" in sys.modules:
        return False
    import inspect

    package = types.ModuleType("asyncio", "stand-in while pydantic imports (appliance.cli.startup)")
    package.__path__ = []  # a package, so `import asyncio.coroutines` resolves to the child below
    coroutines = types.ModuleType("asyncio.coroutines")
    coroutines.iscoroutinefunction = inspect.iscoroutinefunction
    coroutines._is_coroutine = object()
    package.coroutines = coroutines
    sys.modules["asyncio"] = package
    sys.modules["asyncio.coroutines"] = coroutines
    try:
        import pydantic.main  # noqa: F401  (BaseModel and what it pulls in)
        import pydantic_core.core_schema  # noqa: F401
    finally:
        if sys.modules.get("asyncio") is package:
            del sys.modules["asyncio"]
        if sys.modules.get("asyncio.coroutines") is coroutines:
            del sys.modules["asyncio.coroutines"]
    return True


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
