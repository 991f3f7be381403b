//! `/metrics` in Prometheus text: requests by route and status, latency
//! histograms per route, queue size, batch size and batch tokens histograms,
//! tokens processed; and [`Work`], what one request used of the batcher (for
//! its log line).

use bertrt::batcher::{BatchReport, RequestOutput};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    latency: HistogramFamily<RouteLabel>,
    queue_time: Histogram,
    batch_size: Histogram,
    batch_tokens: Histogram,
    forward_time: Histogram,
    tokens: Counter,
    failed_batches: Counter,
    /// Set on each scrape from the batcher and the concurrency gate.
    pub queue_size: Gauge,
    pub queue_tokens: Gauge,
    pub in_flight: Gauge,
    pub max_requests_in_batch: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            queue_time: latency_histogram(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            batch_tokens: Histogram::new(exponential_buckets(16.0, 2.0, 12)),
            forward_time: latency_histogram(),
            tokens: Counter::default(),
            failed_batches: Counter::default(),
            queue_size: Gauge::default(),
            queue_tokens: Gauge::default(),
            in_flight: Gauge::default(),
            max_requests_in_batch: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "bertrt_requests",
            "HTTP responses by route and status",
            m.requests.clone(),
        );
        r.register(
            "bertrt_request_duration_seconds",
            "Time from request to response, by route",
            m.latency.clone(),
        );
        r.register(
            "bertrt_queue_duration_seconds",
            "Time a batcher request waited before its forward",
            m.queue_time.clone(),
        );
        r.register(
            "bertrt_batch_size",
            "Requests packed into one forward",
            m.batch_size.clone(),
        );
        r.register(
            "bertrt_batch_tokens",
            "Tokens packed into one forward",
            m.batch_tokens.clone(),
        );
        r.register(
            "bertrt_forward_duration_seconds",
            "Time of one packed forward",
            m.forward_time.clone(),
        );
        r.register(
            "bertrt_tokens",
            "Tokens processed by the model",
            m.tokens.clone(),
        );
        r.register(
            "bertrt_failed_batches",
            "Forwards that failed (their requests answered 500)",
            m.failed_batches.clone(),
        );
        r.register(
            "bertrt_queue_size",
            "Requests waiting for a forward",
            m.queue_size.clone(),
        );
        r.register(
            "bertrt_queue_tokens",
            "Tokens in the requests waiting for a forward",
            m.queue_tokens.clone(),
        );
        r.register(
            "bertrt_requests_in_flight",
            "HTTP requests holding a concurrency slot",
            m.in_flight.clone(),
        );
        r.register(
            "bertrt_max_requests_in_batch",
            "Most requests seen in one forward",
            m.max_requests_in_batch.clone(),
        );
        m
    }

    pub fn observe_request(&self, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RouteStatus {
                route: route.into(),
                status: status.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabel {
                route: route.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn observe_batch(&self, b: &BatchReport) {
        self.batch_size.observe(b.requests as f64);
        self.batch_tokens.observe(b.tokens as f64);
        self.forward_time.observe(b.forward_time.as_secs_f64());
        if b.ok {
            self.tokens.inc_by(b.tokens as u64);
        } else {
            self.failed_batches.inc();
        }
    }

    pub fn observe_queue_time(&self, t: Duration) {
        self.queue_time.observe(t.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut t = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut t, &self.registry);
        t
    }
}

/// What one request used of the batcher: its tokens, its longest wait in the
/// queue, and the forwards it took part in. Handlers put it in the
/// response's extensions; the gate logs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Work {
    pub tokens: usize,
    pub queue_time: Duration,
    pub compute_time: Duration,
}

impl Work {
    pub fn add(&mut self, r: &RequestOutput) {
        self.tokens += r.batch.num_tokens();
        self.queue_time = self.queue_time.max(r.queue_time);
        self.compute_time += r.forward_time;
    }
}
