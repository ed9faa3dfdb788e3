//! Prometheus metrics of the token service, at `/metrics` (and on the admin listener). Labels
//! are small fixed sets (an API method, a status, a kind of token): never a caller or a
//! resource, so the series count does not grow with use.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The API method (`routes::Operation::method_name`), or `unknown` for an unrouted path.
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `federated_access_token`, `access_token`, `id_token`, `signed_blob`, `signed_jwt`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `open` or `idle`.
    pub state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// The service's metrics; the store's are read from it at each scrape.
pub struct Metrics {
    pub audit: crate::audit::AuditMetrics,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pub issued: Family<KindLabels, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_stale_answers: Counter,
    cache_invalidations: Counter,
    database_errors: Counter,
    database_reachable: Gauge,
    database_connections: Family<StateLabels, Gauge>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            audit: crate::audit::AuditMetrics::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            issued: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_stale_answers: Counter::default(),
            cache_invalidations: Counter::default(),
            database_errors: Counter::default(),
            database_reachable: Gauge::default(),
            database_connections: Family::default(),
            registry: Registry::default(),
        };
        m.register();
        m
    }
}

impl Metrics {
    fn register(&mut self) {
        let r = &mut self.registry;
        self.audit.register(r);
        r.register(
            "wid_requests",
            "Requests answered, by API method and HTTP status",
            self.requests.clone(),
        );
        r.register(
            "wid_request_duration_seconds",
            "Time to answer a request, by API method",
            self.latency.clone(),
        );
        r.register(
            "wid_tokens_issued",
            "Tokens and signatures issued, by kind",
            self.issued.clone(),
        );
        r.register(
            "wid_cache_hits",
            "Lookups of the token path answered from the cache",
            self.cache_hits.clone(),
        );
        r.register(
            "wid_cache_misses",
            "Lookups of the token path that read the database",
            self.cache_misses.clone(),
        );
        r.register(
            "wid_cache_stale_answers",
            "Lookups answered from the cache only because the database was unreachable",
            self.cache_stale_answers.clone(),
        );
        r.register(
            "wid_cache_invalidations",
            "Times the cache was cleared: writes here, other replicas' writes, resyncs",
            self.cache_invalidations.clone(),
        );
        r.register(
            "wid_database_errors",
            "Database operations that failed for want of the database",
            self.database_errors.clone(),
        );
        r.register(
            "wid_database_reachable",
            "1 while the database answers, else 0",
            self.database_reachable.clone(),
        );
        r.register(
            "wid_database_connections",
            "Connections of the pool, by state",
            self.database_connections.clone(),
        );
    }

    /// The metrics now, in the OpenMetrics text format.
    pub fn response(&self, store: &wid_store::Store) -> axum::response::Response {
        let counts = store.cache_counts();
        let sync = |counter: &Counter, total: &std::sync::atomic::AtomicU64| {
            let total = total.load(Ordering::Relaxed);
            counter.inc_by(total.saturating_sub(counter.get()));
        };
        sync(&self.cache_hits, &counts.hits);
        sync(&self.cache_misses, &counts.misses);
        sync(&self.cache_stale_answers, &counts.stale_answers);
        sync(&self.cache_invalidations, &counts.invalidations);
        sync(&self.database_errors, &counts.database_errors);
        self.database_reachable.set(i64::from(store.reachable()));
        let (open, idle) = store.pool_connections();
        let state = |state| StateLabels { state };
        self.database_connections
            .get_or_create(&state("open"))
            .set(i64::from(open));
        self.database_connections
            .get_or_create(&state("idle"))
            .set(i64::try_from(idle).unwrap_or(i64::MAX));
        wid_runtime::openmetrics::response(&self.registry)
    }

    /// Counts a request answered.
    pub fn request(&self, method: &'static str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { method, status })
            .inc();
        self.latency
            .get_or_create(&MethodLabels { method })
            .observe(seconds);
    }

    /// Counts a token or signature issued.
    pub fn issued(&self, kind: &'static str) {
        self.issued.get_or_create(&KindLabels { kind }).inc();
    }
}
