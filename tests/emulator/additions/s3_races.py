"""Another writer between a listing and a copy: `delete_before_copy`.

AWS has no such switch; it is how a test puts a concurrent deleter exactly between ferry's
listing of a source bucket and its CopyObject calls. Configured as
`{"bucket": "<source bucket>", "keys": ["k", ...]}`: the first CopyObject whose copy source is
that bucket first deletes every version of those keys (as `DeleteObject` with each `versionId`
would), and the setting goes back to null. The copy of such an object then fails as S3 answers
it: `NoSuchVersion` when the copy names the version, `NoSuchKey` when it does not.
"""

from typing import Any
from urllib.parse import unquote, urlparse

from . import state


def before_copy(environ: dict[str, Any]) -> None:
    if not state.config.get("delete_before_copy"):
        return
    with state.lock:
        race = state.config.get("delete_before_copy")
        if not race:
            return
        source = environ.get("HTTP_X_AMZ_COPY_SOURCE", "")
        bucket = unquote(urlparse(source).path).lstrip("/").split("/", 1)[0]
        if bucket != race["bucket"]:
            return
        state.config["delete_before_copy"] = None
        # Still under the lock: a copy of one of these keys that arrives meanwhile waits in
        # before_copy until they are gone, so every copy after the first sees them deleted.
        from moto.s3.models import s3_backends

        for owner in list(s3_backends.keys()):
            backend = s3_backends[owner]["global"]
            if race["bucket"] not in backend.buckets:
                continue
            b = backend.buckets[race["bucket"]]
            for key in race["keys"]:
                for version in list(b.keys.getlist(key, [])):
                    backend.delete_object(race["bucket"], key, version_id=version.version_id)
