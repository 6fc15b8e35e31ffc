"""Node inventory: what hardware and software the node has (not how busy it is)."""
