"""``python -m shared.cli``: the qianshao command (how the local stack starts the services)."""

from shared.cli import main

main()
