"""Entry points: what `ray job submit` runs (`python -m jobs.<name>`) and what the `tempme` command calls."""
