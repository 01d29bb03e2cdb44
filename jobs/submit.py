"""Submit any job (preprocess, train, evaluate, embed, ...) to a Ray cluster through the job submission API."""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import jobs.cli
from jobs.options import add_options
from pipelines.cluster import submit
from pipelines.options import option
from tempme.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class SubmitOptions:
    address: str = option("http://127.0.0.1:8265", "the cluster's dashboard / job API")
    follow: bool = option(False, "stream the job's logs and exit with its status")
    working_dir: str = option(str(REPO_ROOT), "code uploaded as the runtime env's working_dir (default: this "
                                              "checkout)")
    pip: list[str] = option(help="extra package for the job's runtime env (repeatable)", repeat=True,
                            metavar="REQUIREMENT", default_factory=list)
    env: list[str] = option(help="environment variable for the job (repeatable), e.g. "
                                 "MLFLOW_TRACKING_URI=http://mlflow:5000", repeat=True, metavar="KEY=VALUE",
                            default_factory=list)
    submission_id: str | None = option(None, "a fixed id (submitting the same id twice is refused)")
    token: str | None = option(None, "cluster auth token (default: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, "
                                     "~/.ray/auth_token)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, SubmitOptions)
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="JOB [-- JOB OPTIONS]",
                        help=f"one of: {', '.join(_submittable())}; its options after --")
    parser.epilog = ("Example: tempme submit embed --address http://head:8265 --follow -- "
                     "--shards s3://corpus/shards --model models:/tempme-msrvtt-b32@champion --out s3://corpus/index")


def _submittable() -> list[str]:
    return [name for name in jobs.cli.COMMANDS if name != "submit"]


def _split_command(args: argparse.Namespace) -> tuple[str, list[str]]:
    """JOB, then this command's own options, then `--` and the job's options (argparse keeps them together)."""
    words = list(args.command)
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise UserError(f"name a job, one of: {', '.join(_submittable())}")
    job, rest = jobs.cli.ALIASES.get(words[0], words[0]), words[1:]
    own, job_args = (rest[: rest.index("--")], rest[rest.index("--") + 1:]) if "--" in rest else (rest, [])
    if own:
        own_parser = argparse.ArgumentParser(prog="tempme submit", add_help=False)
        add_options(own_parser, SubmitOptions)
        own_parser.parse_args(own, namespace=args)   # options given after the job name
    if job not in _submittable():
        raise UserError(f"unknown job {job!r}; one of: {', '.join(_submittable())}")
    return job, job_args


def entrypoint(job: str, job_args: list[str]) -> str:
    """The shell command the cluster runs: the job's module, as `python -m jobs.<module>`."""
    module = jobs.cli.COMMANDS[job][0]
    return shlex.join(["python", "-m", f"jobs.{module}", *job_args])


def _env_vars(pairs: list[str]) -> dict[str, str]:
    """--env KEY=VALUE options as a dict; ValueError naming the first one without a KEY=."""
    env = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise UserError(f"--env {pair!r} must look like KEY=VALUE")
        env[key] = value
    return env


def run(args) -> int:

    job, job_args = _split_command(args)
    env_vars = _env_vars(args.env)
    client = submit.connect(args.address, args.token)
    command = entrypoint(job, job_args)
    submission_id = submit.submit(client, command, submit.runtime_env(args.working_dir, args.pip, env_vars),
                                  args.submission_id, metadata={"tempme_job": job})
    print(f"submitted {job} as {submission_id} to {args.address}: {command}", flush=True)
    if not args.follow:
        return 0
    status = submit.follow(client, submission_id, lambda line: print(line, flush=True))
    print(f"job {submission_id} {status}", flush=True)
    return 0 if status == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
