"""The pipeline shown end to end (`end_to_end`, what `tempme demo` runs) on a generated corpus (`synthetic`)."""
