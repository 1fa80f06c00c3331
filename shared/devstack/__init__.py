"""The local stack: PostgreSQL and the Tansu broker started by the project itself, the demo feed and
the fake delivery providers. Used by ``qianshao up`` and by the test fixtures."""
