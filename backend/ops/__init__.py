"""Op handlers, one module per family.  Each module has ``register(registry)``."""
