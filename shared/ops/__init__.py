"""Operations artefacts built from code: the Grafana dashboards and their provisioning."""
