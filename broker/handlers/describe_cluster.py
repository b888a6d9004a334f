"""DescribeCluster (60) v0-2: the cluster id, this node as the only broker and the controller.

endpoint_type 1 (brokers) is the only kind there is; asking for controllers (2) ->
UNSUPPORTED_ENDPOINT_TYPE, as a Kafka broker answers. Asked for, the cluster's authorized
operations are all those a cluster supports (no authorizer: broker/handlers/_authorized.py).
"""
from __future__ import annotations

import datetime

from kio.schema.errors import ErrorCode

from ..security import authorizer as acl
from . import RequestContext, _authorized, handler, make, nested

ENDPOINT_BROKERS = 1


@handler(api_key=60, min_version=0, max_version=2)
async def describe_cluster(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    if not ctx.authorize(acl.DESCRIBE, acl.CLUSTER, acl.CLUSTER_NAME):
        return ctx.refused(acl.CLUSTER)
    Response = ctx.response_class()
    BrokerCls = nested(Response, "DescribeClusterBroker")
    endpoint_type = int(getattr(request, "endpoint_type", ENDPOINT_BROKERS))
    if endpoint_type != ENDPOINT_BROKERS:
        return make(Response, throttle_time=datetime.timedelta(0), error_code=ErrorCode.unsupported_endpoint_type,
                    error_message="only the brokers endpoint type is supported", endpoint_type=endpoint_type,
                    cluster_id=broker.cluster_id, controller_id=-1, brokers=())
    if broker.cluster is not None:  # cluster mode: the live brokers etcd lists
        nodes = tuple(make(BrokerCls, broker_id=b, host=h, port=p, rack=None, is_fenced=False)
                      for b, h, p in broker.cluster.live_brokers(ctx.listener_name))
        controller = broker.cluster.controller_id
    else:
        nodes = (make(BrokerCls, broker_id=broker.node_id, host=ctx.advertised[0], port=ctx.advertised[1], rack=None,
                      is_fenced=False),)
        controller = broker.node_id
    return make(
        Response,
        throttle_time=datetime.timedelta(0),
        error_code=ErrorCode.none,
        error_message=None,
        endpoint_type=ENDPOINT_BROKERS,
        cluster_id=broker.cluster_id,
        controller_id=controller,
        brokers=nodes,
        cluster_authorized_operations=_authorized.authorized(
            request, "include_cluster_authorized_operations", _authorized.CLUSTER),
    )
