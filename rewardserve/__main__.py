"""``python -m rewardserve`` runs the CLI."""

from rewardserve.cli import main

raise SystemExit(main())
