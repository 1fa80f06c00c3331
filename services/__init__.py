"""The four Qianshao services: ingest, risk, alerting and gateway."""
