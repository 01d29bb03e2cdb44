"""Multipart uploads that a killed process left unfinished under a folder of an S3 store.

A process killed in the middle of an upload (SIGKILL, a node lost) leaves its parts on the store: invisible,
billed, and kept until someone aborts them. pyarrow can neither list nor abort them, so this asks S3 itself
through boto3, which finds the endpoint, region and credentials in the same standard AWS variables and files.
Only a run that holds the folder's lease, before it writes anything, may call it: then no live process can
have an upload open there. The bucket's lifecycle rule (infra/s3-lifecycle.json) is the backstop for stores
where listing uploads is not allowed.
"""
from __future__ import annotations

import logging

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from pipelines.storage.location import Location

log = logging.getLogger(__name__)


def abort_unfinished_uploads(folder: Location) -> int:
    """Abort every multipart upload under `folder` (an s3:// location; other places have none); how many. A
    store that refuses the listing is logged and left to its lifecycle rule: it is no reason to stop a run."""
    if not folder.uri.startswith("s3://"):
        return 0
    bucket, _, key = folder.path.partition("/")
    prefix = key.rstrip("/") + "/" if key else ""
    client = boto3.client("s3")
    aborted = 0
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted += 1
    except (BotoCoreError, ClientError) as e:
        log.warning("%s: could not list or abort unfinished uploads (%s); the bucket's lifecycle rule removes "
                    "them", folder.uri, e)
    return aborted
