"""`python -m jobs.bench WHAT [options]`: one benchmark on its own (e.g. under `ray job submit`), the same
as `tempme bench WHAT [options]`."""
import sys

from jobs.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
