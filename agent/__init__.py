"""The relay daemon: an inner node of the tree, run on some hypervisors."""
