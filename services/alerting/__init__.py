"""alerting: turns risk events into warnings with a lifecycle and delivers them."""
