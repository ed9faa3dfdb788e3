//! Prometheus metrics of the agent, on its admin listener. Labels are small fixed sets (endpoint
//! class, status, cache result): never a pod, so the series count does not grow with the node.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cache::Source;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `root`, `token`, `identity`, `metadata`.
    pub endpoint: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit`, `miss`, `stale`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    /// `pod` or `node`.
    pub budget: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// `ok`, `refused`, `unavailable`.
    pub outcome: &'static str,
}

fn cache_result(source: Source) -> &'static str {
    match source {
        Source::Hit => "hit",
        Source::Miss => "miss",
        Source::Stale => "stale",
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// The class of a request's path: a small fixed set, so a label that never grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Root,
    Token,
    Identity,
    Metadata,
    /// Another cloud's metadata service, relayed (`--passthrough`).
    Passthrough,
}

impl Endpoint {
    const ALL: [Endpoint; 5] = [
        Endpoint::Root,
        Endpoint::Token,
        Endpoint::Identity,
        Endpoint::Metadata,
        Endpoint::Passthrough,
    ];

    /// The class of a request for Google's API, by its path.
    pub fn of_path(path: &str) -> Endpoint {
        if path == "/" {
            Endpoint::Root
        } else if path.ends_with("/token") {
            Endpoint::Token
        } else if path.ends_with("/identity") {
            Endpoint::Identity
        } else {
            Endpoint::Metadata
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Endpoint::Root => "root",
            Endpoint::Token => "token",
            Endpoint::Identity => "identity",
            Endpoint::Metadata => "metadata",
            Endpoint::Passthrough => "passthrough",
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// Handles resolved once, so that the hot path takes no family lookup: the 200s and the
    /// latency of each endpoint class, and each cache result.
    ok_by_endpoint: [Counter; 5],
    latency_by_endpoint: [Histogram; 5],
    cache_by_result: [Counter; 3],
    upstream: Family<UpstreamLabels, Counter>,
    upstream_latency: Histogram,
    pod_waits: Counter,
    attestation_refusals: Counter,
    throttled: Family<BudgetLabels, Counter>,
    connections_shed: Counter,
    prefetches: Family<UpstreamLabels, Counter>,
    /// Set when scraped: what the agent holds now.
    addresses: Gauge,
    ready: Gauge,
    cached_tokens: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wid_metadata");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let cache = Family::<CacheLabels, Counter>::default();
        let upstream = Family::<UpstreamLabels, Counter>::default();
        let upstream_latency = latency_histogram();
        let pod_waits = Counter::default();
        let attestation_refusals = Counter::default();
        let throttled = Family::<BudgetLabels, Counter>::default();
        let connections_shed = Counter::default();
        let prefetches = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "token_prefetches",
            "Access tokens fetched for a new pod before it asked (ok), or not got (refused, unavailable, throttled)",
            prefetches.clone(),
        );
        registry.register(
            "upstream_throttled",
            "Upstream calls not made because a budget (the pod's or the node's) was spent",
            throttled.clone(),
        );
        registry.register(
            "connections_shed",
            "Idle or unanswered connections closed to make room: connections of the address holding the most, or of addresses that are no pod",
            connections_shed.clone(),
        );
        let (addresses, ready, cached_tokens) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register(
            "attestation_refusals",
            "Connections refused because the kernel did not show them in their pod (--attest-callers)",
            attestation_refusals.clone(),
        );
        registry.register(
            "pod_addresses",
            "Addresses the agent answers for: its node's pods (and the node's, with a node identity)",
            addresses.clone(),
        );
        registry.register("ready", "1 once the node's pods are known", ready.clone());
        registry.register(
            "cached_tokens",
            "Tokens held in the cache (access, ID and the federated tokens that buy them)",
            cached_tokens.clone(),
        );
        registry.register(
            "pod_waits",
            "Requests held because no pod had their address yet (a pod's first moments)",
            pod_waits.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by endpoint class and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer, by endpoint class",
            latency.clone(),
        );
        registry.register(
            "token_cache",
            "Token cache lookups, by result",
            cache.clone(),
        );
        registry.register(
            "upstream_calls",
            "Calls to STS and IAM Credentials, by outcome",
            upstream.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time of calls to STS and IAM Credentials",
            upstream_latency.clone(),
        );
        let ok_by_endpoint = Endpoint::ALL.map(|e| {
            requests
                .get_or_create(&RequestLabels {
                    endpoint: e.as_str(),
                    status: 200,
                })
                .clone()
        });
        let latency_by_endpoint = Endpoint::ALL.map(|e| {
            latency
                .get_or_create(&EndpointLabels {
                    endpoint: e.as_str(),
                })
                .clone()
        });
        let cache_by_result = [Source::Hit, Source::Miss, Source::Stale].map(|source| {
            cache
                .get_or_create(&CacheLabels {
                    result: cache_result(source),
                })
                .clone()
        });
        Metrics {
            registry,
            requests,
            ok_by_endpoint,
            latency_by_endpoint,
            cache_by_result,
            upstream,
            upstream_latency,
            pod_waits,
            attestation_refusals,
            throttled,
            connections_shed,
            prefetches,
            addresses,
            ready,
            cached_tokens,
        }
    }
}

impl Metrics {
    pub fn request(&self, endpoint: Endpoint, status: u16, elapsed: Duration) {
        let index = endpoint as usize;
        if status == 200 {
            self.ok_by_endpoint[index].inc();
        } else {
            self.requests
                .get_or_create(&RequestLabels {
                    endpoint: endpoint.as_str(),
                    status,
                })
                .inc();
        }
        self.latency_by_endpoint[index].observe(elapsed.as_secs_f64());
    }

    pub fn cache(&self, source: Source) {
        let index = match source {
            Source::Hit => 0,
            Source::Miss => 1,
            Source::Stale => 2,
        };
        self.cache_by_result[index].inc();
    }

    pub fn upstream(&self, outcome: &'static str, elapsed: Duration) {
        self.upstream
            .get_or_create(&UpstreamLabels { outcome })
            .inc();
        self.upstream_latency.observe(elapsed.as_secs_f64());
    }

    pub fn throttled(&self, exhausted: crate::limits::Exhausted) {
        let budget = match exhausted {
            crate::limits::Exhausted::Pod => "pod",
            crate::limits::Exhausted::Node => "node",
        };
        self.throttled.get_or_create(&BudgetLabels { budget }).inc();
    }

    /// A new pod's access token fetched before it asked: `ok`, `refused`, `unavailable` or
    /// `throttled`.
    pub fn prefetch(&self, outcome: &'static str) {
        self.prefetches
            .get_or_create(&UpstreamLabels { outcome })
            .inc();
    }

    pub fn connection_shed(&self) {
        self.connections_shed.inc();
    }

    pub fn pod_wait(&self) {
        self.pod_waits.inc();
    }

    pub fn attestation_refused(&self) {
        self.attestation_refusals.inc();
    }

    /// What the agent holds now, set just before a scrape.
    pub fn holding(&self, addresses: usize, ready: bool, cached_tokens: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.addresses.set(gauge(addresses));
        self.ready.set(i64::from(ready));
        self.cached_tokens.set(gauge(cached_tokens));
    }
}
