"""`python -m jobs.schedule`, the nightly job's old module name, kept for one release so crontab lines written
before the rename keep running; new lines call `jobs.nightly`."""
import sys

import jobs.cli

if __name__ == "__main__":
    sys.exit(jobs.cli.run_module("jobs.nightly"))
