"""The node agent (``appliance agent``): reconcile loop, hardware re-detection, metrics."""
