"""One Envoy's delta-xDS conversation: first answers, diffs, removals, ACK/NACK, reconnects."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from structlog.testing import capture_logs

from services.xds.resources import CLUSTER, ROUTE, Resource, resource
from services.xds.session import DeltaSession, SotwSession


def _clusters(**content: int) -> dict[str, Resource]:
    return {n: resource(n, cluster_pb2.Cluster(name=n, alt_stat_name=str(t)))
            for n, t in content.items()}


def _req(type_url: str, **kw: object) -> discovery_pb2.DeltaDiscoveryRequest:
    return discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, **kw)  # type: ignore[arg-type]


def test_a_wildcard_type_gets_everything_then_only_what_changed_and_what_disappeared() -> None:
    s = DeltaSession("edge-1", "r-east")
    assert s.push(CLUSTER, _clusters(a=1), "1") is None  # not asked for yet
    s.receive(_req(CLUSTER))
    first = s.push(CLUSTER, _clusters(a=1, b=2), "1")
    assert first is not None and sorted(r.name for r in first.resources) == ["a", "b"]
    assert s.push(CLUSTER, _clusters(a=1, b=2), "1") is None  # nothing changed
    second = s.push(CLUSTER, _clusters(a=1, c=3), "2")
    assert second is not None
    assert [r.name for r in second.resources] == ["c"]
    assert list(second.removed_resources) == ["b"]
    assert second.nonce != first.nonce and second.system_version_info == "2"


def test_the_first_request_of_a_type_is_answered_even_when_there_is_nothing() -> None:
    s = DeltaSession("edge-1", "r-east")
    s.receive(_req(CLUSTER))
    resp = s.push(CLUSTER, {}, "0")  # Envoy waits for it to finish initialising
    assert resp is not None and not resp.resources
    assert s.push(CLUSTER, {}, "0") is None


def test_named_types_send_only_what_was_subscribed_and_forget_unsubscribed_names() -> None:
    s = DeltaSession("edge-1", "r-east")
    offered = _clusters(**{"routes:r-east": 1, "routes:r-west": 2})
    s.receive(_req(ROUTE, resource_names_subscribe=["routes:r-east"]))
    resp = s.push(ROUTE, offered, "1")
    assert resp is not None and [r.name for r in resp.resources] == ["routes:r-east"]
    s.receive(_req(ROUTE, resource_names_unsubscribe=["routes:r-east"]))
    s.receive(_req(ROUTE, resource_names_subscribe=["routes:r-east"]))
    again = s.push(ROUTE, offered, "1")  # resubscribed: sent again, whole
    assert again is not None and [r.name for r in again.resources] == ["routes:r-east"]


def test_a_reconnecting_envoy_is_not_resent_what_it_already_holds() -> None:
    offered = _clusters(a=1, b=2)
    s = DeltaSession("edge-1", "r-east")
    s.receive(_req(CLUSTER, initial_resource_versions={"a": offered["a"].version,
                                                       "old": "x"}))
    resp = s.push(CLUSTER, offered, "7")
    assert resp is not None
    assert [r.name for r in resp.resources] == ["b"]
    assert list(resp.removed_resources) == ["old"]


def test_a_nack_is_logged_with_envoys_error_and_the_stream_keeps_serving() -> None:
    s = DeltaSession("edge-1", "r-east")
    s.receive(_req(CLUSTER))
    resp = s.push(CLUSTER, _clusters(a=1), "1")
    assert resp is not None
    with capture_logs() as logs:
        s.receive(_req(CLUSTER, response_nonce=resp.nonce, error_detail=status_pb2.Status(
            code=3, message="Proto constraint validation failed: cluster a")))
    assert [(e["event"], e["error"]) for e in logs] == [
        ("xds_nack", "Proto constraint validation failed: cluster a")]
    assert s.replies.nacks[0].nonce == resp.nonce and s.replies.acks == 0
    assert s.push(CLUSTER, _clusters(a=1), "1") is None  # the rejected content is not resent
    fixed = s.push(CLUSTER, _clusters(a=5), "2")  # the next change goes out as usual
    assert fixed is not None and [r.name for r in fixed.resources] == ["a"]
    s.receive(_req(CLUSTER, response_nonce=fixed.nonce))
    assert s.replies.acks == 1 and not s.replies.outstanding


def test_state_of_the_world_sends_the_whole_set_only_when_it_or_the_subscription_moved() -> None:
    s = SotwSession("edge-1", "r-east")
    s.receive(discovery_pb2.DiscoveryRequest(type_url=CLUSTER))
    first = s.push(CLUSTER, _clusters(a=1, b=2), "1")
    assert first is not None and len(first.resources) == 2
    s.receive(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, response_nonce=first.nonce,
                                             version_info=first.version_info))
    assert s.replies.acks == 1
    assert s.push(CLUSTER, _clusters(a=1, b=2), "1") is None  # same set: nothing
    second = s.push(CLUSTER, _clusters(a=1), "2")  # b is gone: omitted from the whole set
    assert second is not None and len(second.resources) == 1
    assert second.version_info != first.version_info
    s.receive(discovery_pb2.DiscoveryRequest(type_url=ROUTE, resource_names=["routes:r-east"]))
    routes = s.push(ROUTE, _clusters(**{"routes:r-east": 1, "routes:r-west": 1}), "2")
    assert routes is not None and len(routes.resources) == 1
    nack = status_pb2.Status(code=3, message="bad route")
    s.receive(discovery_pb2.DiscoveryRequest(type_url=ROUTE, resource_names=["routes:r-east"],
                                             response_nonce=routes.nonce, error_detail=nack))
    assert s.replies.nacks[-1].message == "bad route"
    assert s.push(ROUTE, _clusters(**{"routes:r-east": 1}), "2") is None  # not resent as is
