"""A rack of boxes as one appliance: the cluster's nodes (the Ansible inventory), their gathered
inventories, and one plan across them (:mod:`appliance.cluster.planner`).

Layer: above the planner, provisioning and the runtime (it plans with the single-node planner
and gathers through the ansible-runner adapter); below the CLI.
"""
