"""The frontend: the tree's root, and (in later issues) the cloud's state and API."""
