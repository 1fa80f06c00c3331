"""ingest: takes readings in over HTTP and Kafka, validates, quality-flags, stores and publishes."""
