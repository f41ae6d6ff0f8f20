"""Integrations with trading engines. Each lives in its own sub-package, imports its engine,
and is installed by an optional extra; nothing in the storage core imports them."""
