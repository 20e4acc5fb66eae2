"""DescribeSnapshots and DescribeImages answer in pages and refuse too many values.

moto 5.2.5 ignores MaxResults and NextToken on both and takes any number of filter values, so a
client that reads only its first page, or sends 1,000 ids in one filter, passes against it. AWS:

- Pages. `MaxResults` asks for a page of at most that many items; the answer carries a
  `NextToken` while items remain, and the same request with that token continues after them
  (EC2 API reference, DescribeSnapshots / DescribeImages `MaxResults`, `NextToken`; *Pagination*
  in Query-Requests; botocore's ec2 paginators: input and output token `NextToken`, limit key
  `MaxResults`). DescribeSnapshots: "This value can be between 5 and 1000; if MaxResults is given
  a value larger than 1000, only 1000 results are returned. If this parameter is not used, then
  DescribeSnapshots returns all results. You cannot specify this parameter and the snapshot IDs
  parameter in the same request." (the API reference's earlier wording, kept in botocore's
  ec2 2016-04-01 model). The current reference adds "We strongly recommend using only paginated
  requests. Unpaginated requests are susceptible to throttling and timeouts." So an unpaginated
  request is answered whole, as AWS documents, and a client with many snapshots must pass
  MaxResults itself (the SDK paginators do not: without `page_size` they send none).
  DescribeImages is taken to follow the same range and rules [U: its reference gives no range].
- `MaxResults` below 5 → `InvalidParameterValue` "Value ( N ) for parameter maxResults is
  invalid. Expecting a value greater than 5." (EC2's text, as reported for DescribeInstances);
  above 1000 → pages of 1000. With `SnapshotIds` / `ImageIds` → `InvalidParameterCombination`
  "The parameter snapshotSet cannot be used with the parameter maxResults" (the form EC2 gives
  for DescribeVolumes' `volumeSet`, reported by AWS CLI users; the set names are [U]; that
  DescribeImages refuses `ImageId.N` with MaxResults is reported by aws-sdk-ruby users).
- A `NextToken` this emulator did not issue, or one used with other parameters than the request
  that got it → `InvalidNextToken` [U: moto's code for its other EC2 describes; AWS's own code is
  not in our sources].
- More than 200 values in one filter → `FilterLimitExceeded` (HTTP 400) "The maximum number of
  filter values specified on a single call is 200" (EC2 API *Error codes*: FilterLimitExceeded,
  "The request uses too many filters or too many filter values"; the message as EC2 returns it,
  reported by users of DescribeInstances and DescribeTags). More than 1,000 ids in
  `SnapshotIds` / `ImageIds` → `FilterLimitExceeded` "The maximum number of ids specified on a
  single call is 1000" [U: code and text; the EC2 developer guide, *Pagination in the Amazon EC2
  API*, says only "you should not specify more than 1,000 IDs in a single call"].

`max_page_items` (default 1000, AWS's largest page) caps a page below MaxResults, so a test can
spread a world of a few hundred items over several pages while ferry asks for AWS's largest
page; a client that follows NextToken until it is absent reads everything either way.

Every such request is recorded for the counters (`describes`): account, region, action, the
MaxResults it asked for (None: unpaginated), whether it carried a NextToken, the items answered,
the ids it named, each filter's number of values and the most values in one of them, and the
error code if refused.
"""

import base64
import hashlib
import json
from typing import Any, Callable

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError, InvalidParameterCombination
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.elastic_block_store import ElasticBlockStore

from . import state

MIN_RESULTS, MAX_RESULTS = 5, 1000
FILTER_VALUES = 200
IDS = 1000

# one entry per DescribeSnapshots / DescribeImages request, in arrival order
describes: list[dict[str, Any]] = []


def _forget(config_only: bool) -> None:
    if not config_only:
        with state.lock:
            describes.clear()


state.on_reset(_forget)


def zero_counters() -> None:
    with state.lock:
        describes.clear()


def counters() -> list[dict[str, Any]]:
    with state.lock:
        return [dict(d) for d in describes]


class _Refused(EC2ClientError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)


def _query_digest(self: Any) -> str:
    """The request's parameters but NextToken and MaxResults: a token belongs to one query."""
    params = {
        k: sorted(v)
        for k, v in self.querystring.items()
        if k not in ("NextToken", "MaxResults", "Action", "Version")
    }
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _token(offset: int, digest: str) -> str:
    return base64.urlsafe_b64encode(f"{offset}:{digest}".encode()).decode()


def _offset(token: str, digest: str) -> int:
    try:
        offset, got = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
        if got == digest and int(offset) >= 0:
            return int(offset)
    except (ValueError, UnicodeDecodeError):
        pass
    raise _Refused("InvalidNextToken", f"The token '{token}' is invalid")


def _paged(
    action: str, key: str, ids_param: str, id_set: str, original: Callable[[Any], ActionResult]
) -> Callable[[Any], ActionResult]:
    def describe(self: Any) -> ActionResult:
        ids = self._get_param(ids_param, []) or []
        filters = self._filters_from_querystring()
        raw = self._get_param("MaxResults")
        max_results = None if raw in (None, "") else int(raw)
        token = self._get_param("NextToken")
        entry: dict[str, Any] = {
            "account": self.current_account,
            "region": self.region,
            "action": action,
            "max_results": max_results,
            "next_token": bool(token),
            "items": 0,
            "ids": len(ids),
            "filter_values": max((len(v) for v in filters.values()), default=0),
            "filters": {name: len(v) for name, v in filters.items()},
            "error": None,
        }
        try:
            result = _answer(self, key, ids, filters, max_results, token, id_set, original)
        except EC2ClientError as e:
            entry["error"] = e.code
            _record(entry)
            raise
        entry["items"] = len(result.result[key])  # type: ignore[index]
        _record(entry)
        return result

    return describe


def _record(entry: dict[str, Any]) -> None:
    with state.lock:
        describes.append(entry)


def _answer(
    self: Any,
    key: str,
    ids: list[str],
    filters: dict[str, list[str]],
    max_results: int | None,
    token: str | None,
    id_set: str,
    original: Callable[[Any], ActionResult],
) -> ActionResult:
    for values in filters.values():
        if len(values) > FILTER_VALUES:
            raise _Refused(
                "FilterLimitExceeded",
                f"The maximum number of filter values specified on a single call is "
                f"{FILTER_VALUES}",
            )
    if len(ids) > IDS:
        raise _Refused(
            "FilterLimitExceeded",
            f"The maximum number of ids specified on a single call is {IDS}",
        )
    if max_results is not None:
        if ids:
            raise InvalidParameterCombination(
                f"The parameter {id_set} cannot be used with the parameter maxResults"
            )
        if max_results < MIN_RESULTS:
            raise _Refused(
                "InvalidParameterValue",
                f"Value ( {max_results} ) for parameter maxResults is invalid. "
                f"Expecting a value greater than {MIN_RESULTS}.",
            )
    digest = _query_digest(self)
    start = _offset(token, digest) if token else 0
    whole = original(self)
    items = list(whole.result[key])  # type: ignore[index]
    if max_results is None and not token:
        return whole  # unpaginated: everything, as AWS documents
    # A stable order across the pages of one listing.
    items.sort(key=lambda i: i.id)
    size = min(max_results or MAX_RESULTS, MAX_RESULTS, int(state.get("max_page_items")))
    page = items[start : start + size]
    out: dict[str, Any] = {key: page}
    if start + size < len(items):
        out["NextToken"] = _token(start + size, digest)
    return ActionResult(out)


def install() -> None:
    ElasticBlockStore.describe_snapshots = _paged(  # type: ignore[method-assign]
        "DescribeSnapshots",
        "Snapshots",
        "SnapshotIds",
        "snapshotSet",
        ElasticBlockStore.describe_snapshots,
    )
    AmisResponse.describe_images = _paged(  # type: ignore[method-assign]
        "DescribeImages", "Images", "ImageIds", "imagesSet", AmisResponse.describe_images
    )
