//! Prometheus metrics of the agent, on its admin listener. Labels are small fixed sets (endpoint
//! class, status, cache result): never a pod, so the series count does not grow with the node.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
pub struct UpstreamLabels {
    /// `ok`, `refused`, `unavailable`.
    pub outcome: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

pub struct Metrics {
    pub registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    cache: Family<CacheLabels, Counter>,
    upstream: Family<UpstreamLabels, Counter>,
    upstream_latency: Histogram,
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
        Metrics {
            registry,
            requests,
            latency,
            cache,
            upstream,
            upstream_latency,
        }
    }
}

impl Metrics {
    pub fn request(&self, endpoint: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { endpoint, status })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }

    pub fn cache(&self, source: Source) {
        let result = match source {
            Source::Hit => "hit",
            Source::Miss => "miss",
            Source::Stale => "stale",
        };
        self.cache.get_or_create(&CacheLabels { result }).inc();
    }

    pub fn upstream(&self, outcome: &'static str, elapsed: Duration) {
        self.upstream
            .get_or_create(&UpstreamLabels { outcome })
            .inc();
        self.upstream_latency.observe(elapsed.as_secs_f64());
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
