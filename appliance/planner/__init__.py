"""The planner: (inventory, catalog, request) -> a deterministic Plan with explanations."""
