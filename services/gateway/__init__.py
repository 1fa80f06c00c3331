"""gateway: the one public entry — authentication, region-scoped authorisation, routing."""
