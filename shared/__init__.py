"""Qianshao's common package: settings, contracts, Kafka and PostgreSQL adapters, HTTP plumbing.

Nothing here creates a connection, a settings object or a task at import time: every collaborator
is built by a factory and passed in.
"""
