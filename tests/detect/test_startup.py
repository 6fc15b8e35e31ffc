"""Start-up trims of `appliance detect` (appliance/cli/startup.py): same output, less work.

Timings are for benchmarks/bench_detect.py; these tests check the mechanism and that it
changes nothing users see.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

from detect_support import H200, REPO, detect_json, strip_timings


def _in_fresh_process(code: str, env: dict | None = None) -> str:
    import os

    full_env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    full_env.update(env or {})
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), env=full_env)
    assert res.returncode == 0, res.stderr
    return res.stderr


DETECT_THEN_REPORT = (
    "import sys\nfrom appliance.cli import main\n"
    f"try:\n    main(['detect', '--json', '--snapshot', {str(H200)!r}])\nexcept SystemExit:\n    pass\n"
    "print('METADATA', 'importlib.metadata' in sys.modules, file=sys.stderr)\n"
    "print('LOADER', type(sys.modules['pydantic.plugin._loader'].get_plugins()).__name__, file=sys.stderr)\n")


def test_detect_does_not_scan_for_pydantic_plugins():
    err = _in_fresh_process(DETECT_THEN_REPORT)
    assert "METADATA False" in err and "LOADER tuple" in err, err


def test_pydantic_disable_plugins_set_means_pydantic_decides():
    err = _in_fresh_process(DETECT_THEN_REPORT, env={"PYDANTIC_DISABLE_PLUGINS": ""})
    assert "METADATA True" in err, err    # pydantic's own loader ran


def test_output_is_the_same_with_pydantics_own_plugin_loader():
    ours = detect_json("--snapshot", str(H200))
    theirs = detect_json("--snapshot", str(H200), env={"PYDANTIC_DISABLE_PLUGINS": ""})
    assert strip_timings(ours) == strip_timings(theirs)


def test_the_pydantic_loader_contract_still_holds():
    """What skip_pydantic_plugins() replaces: one function, imported by this name. A pydantic
    release that changes this must fail here, not in `appliance detect`."""
    from pydantic.plugin import _loader, _schema_validator

    assert callable(_loader.get_plugins)
    assert "from ._loader import get_plugins" in inspect.getsource(_schema_validator)


def test_skip_is_a_no_op_once_pydantic_loaded_its_loader():
    err = _in_fresh_process(
        "import sys\nimport pydantic.plugin._loader as real\n"
        "from appliance.cli.startup import skip_pydantic_plugins\n"
        "print('SKIPPED', skip_pydantic_plugins(), sys.modules['pydantic.plugin._loader'] is real, file=sys.stderr)\n")
    assert "SKIPPED False True" in err, err


ASYNCIO_AFTER_DETECT = (
    "import sys\nfrom appliance.cli import main\n"
    f"try:\n    main(['detect', '--json', '--snapshot', {str(H200)!r}])\nexcept SystemExit:\n    pass\n"
    "print('ASYNCIO_LOADED', 'asyncio' in sys.modules, file=sys.stderr)\n"
    "import asyncio\n"
    "async def f():\n    await asyncio.sleep(0)\n    return 7\n"
    "print('ASYNCIO_RUNS', asyncio.run(f()), hasattr(asyncio, 'get_event_loop'), file=sys.stderr)\n")


def test_detect_does_not_import_asyncio_and_real_asyncio_still_loads_afterwards():
    err = _in_fresh_process(ASYNCIO_AFTER_DETECT)
    assert "ASYNCIO_LOADED False" in err, err
    assert "ASYNCIO_RUNS 7 True" in err, err


def test_trims_off_imports_asyncio_as_usual():
    err = _in_fresh_process(ASYNCIO_AFTER_DETECT, env={"APPLIANCE_NO_STARTUP_TRIMS": "1"})
    assert "ASYNCIO_LOADED True" in err, err


def test_output_is_the_same_without_any_trim():
    ours = detect_json("--snapshot", str(H200))
    plain = detect_json("--snapshot", str(H200), env={"APPLIANCE_NO_STARTUP_TRIMS": "1"})
    assert strip_timings(ours) == strip_timings(plain)
