"""The per-hypervisor daemon: receives commands from the tree and runs them through its op registry."""
