"""One module per command group; :mod:`clctl.main` mounts them all."""
