"""ApiVersions (18) v0-3: the advertised version windows, generated from the handler registry."""
from __future__ import annotations

import datetime

from kio.schema.errors import ErrorCode

from . import HANDLERS, RequestContext, handler


@handler(api_key=18, min_version=0, max_version=3)
async def api_versions(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    module = __import__(Response.__module__, fromlist=["ApiVersion"])
    ApiVersion = module.ApiVersion
    keys = tuple(
        ApiVersion(api_key=spec.api_key, min_version=spec.advertise_min_version, max_version=spec.max_version)
        for spec in sorted(HANDLERS.values(), key=lambda s: s.api_key)
    )
    fields = {"error_code": ErrorCode.none, "api_keys": keys}
    if ctx.api_version >= 1:
        fields["throttle_time"] = datetime.timedelta(0)
    return Response(**fields)
