"""appliance: provisioning and runtime manager for on-prem LLM all-in-one boxes.

Importing this package must stay cheap: no side effects, no heavy imports
(docker, ansible_runner, pynvml are imported only inside the code that needs them).
"""

__version__ = "0.1.0"
