//! Prometheus metrics through OpenTelemetry: instruments recorded by the API and the worker,
//! exported in the Prometheus text format by each process's `/metrics`.
//!
//! Each process (and each test app) owns its own registry, so figures never leak between
//! instances. Queue-wide gauges (depth by state, oldest ready job, live workers) are read from
//! Postgres when `/metrics` is scraped, by the API only (every API would report the same
//! figures; summing them across targets would be wrong anyway).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::db::Sql;
use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter, MeterProvider as _},
};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder as _, TextEncoder};

use crate::{
    db::DbError,
    queue::{self, JobState},
    workers,
};

/// `Content-Type` of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Seconds: from a millisecond to an hour.
const SECONDS_BUCKETS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
const EXPORT_SECONDS_BUCKETS: [f64; 12] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];
const ROWS_BUCKETS: [f64; 8] = [10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];
const BYTES_BUCKETS: [f64; 8] = [1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
const ATTEMPTS_BUCKETS: [f64; 6] = [1.0, 2.0, 3.0, 5.0, 10.0, 20.0];

/// Queue figures read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct QueueSnapshot {
    /// Jobs by state, every state included: a gauge series left out of a scrape would keep
    /// its last value.
    pub depth_by_state: Vec<(JobState, i64)>,
    /// Seconds the oldest ready (due, unclaimed) job has waited; 0 when none waits.
    pub oldest_ready_seconds: f64,
    /// Workers that heartbeated recently.
    pub live_workers: i64,
}

/// One process's instruments and the registry they are exported from.
pub struct Metrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    queue: Arc<Mutex<Option<QueueSnapshot>>>,
    /// When the queue was last read.
    queue_read_at: Mutex<Option<Instant>>,
    /// HTTP requests answered: `method`, `route`, `status`.
    pub http_requests: Counter<u64>,
    /// Time to answer an HTTP request: `method`, `route`, `status`.
    pub http_duration: Histogram<f64>,
    /// `result`: `created` or `reused`.
    pub export_requests: Counter<u64>,
    /// `status`: `completed`, `failed` or `cancelled`.
    pub exports_finished: Counter<u64>,
    /// Seconds from an export's start to its completion.
    pub export_duration: Histogram<f64>,
    /// Rows per completed export.
    pub export_rows: Histogram<u64>,
    /// Bytes per completed export.
    pub export_bytes: Histogram<u64>,
    /// Seconds a job waited between becoming due and its claim: `kind`.
    pub job_wait: Histogram<f64>,
    /// Attempts a job took: `kind`, `outcome`.
    pub job_attempts: Histogram<u64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Instruments on a registry of their own.
    pub fn new() -> Self {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_scope_info()
            .without_target_info()
            .build()
            .expect("a fresh registry accepts the exporter");
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("statement-export");
        let histogram = |name: &'static str, unit: &'static str, help: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit(unit)
                .with_description(help)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let count_histogram =
            |name: &'static str, unit: &'static str, help: &'static str, buckets: &[f64]| {
                let builder =
                    meter.u64_histogram(name).with_description(help).with_boundaries(buckets.to_vec());
                if unit.is_empty() { builder.build() } else { builder.with_unit(unit).build() }
            };
        Self {
            http_requests: meter
                .u64_counter("http_server_requests")
                .with_description("HTTP requests answered, by method, route and status.")
                .build(),
            http_duration: histogram(
                "http_server_request_duration",
                "s",
                "Time to answer an HTTP request, by method, route and status.",
                &SECONDS_BUCKETS,
            ),
            export_requests: meter
                .u64_counter("statement_export_requests")
                .with_description(
                    "Export requests accepted: result=created (new export) or reused (deduplicated).",
                )
                .build(),
            exports_finished: meter
                .u64_counter("statement_exports_finished")
                .with_description("Exports that ended, by status (completed, failed, cancelled).")
                .build(),
            export_duration: histogram(
                "statement_export_duration",
                "s",
                "Time from an export's start to its completion.",
                &EXPORT_SECONDS_BUCKETS,
            ),
            export_rows: count_histogram(
                "statement_export_rows",
                "",
                "Rows per completed export.",
                &ROWS_BUCKETS,
            ),
            export_bytes: count_histogram(
                "statement_export_size",
                "By",
                "File size per completed export.",
                &BYTES_BUCKETS,
            ),
            job_wait: histogram(
                "statement_job_wait_duration",
                "s",
                "Time a job waited between becoming due and being claimed, by kind.",
                &SECONDS_BUCKETS,
            ),
            job_attempts: count_histogram(
                "statement_job_attempts",
                "",
                "Attempts a job took, by kind and outcome (completed, failed).",
                &ATTEMPTS_BUCKETS,
            ),
            queue: Arc::default(),
            queue_read_at: Mutex::default(),
            registry,
            provider,
        }
    }

    /// Registers the queue gauges, which report the latest [`Metrics::set_queue`] snapshot.
    pub fn with_queue_gauges(self) -> Self {
        let meter = self.meter();
        let queue = self.queue.clone();
        meter
            .i64_observable_gauge("statement_queue_jobs")
            .with_description("Jobs in the queue by state, read from Postgres at scrape time.")
            .with_callback(move |observer| {
                if let Some(snapshot) = queue.lock().expect("metrics lock").as_ref() {
                    for (state, count) in &snapshot.depth_by_state {
                        observer.observe(*count, &[KeyValue::new("state", state.as_str())]);
                    }
                }
            })
            .build();
        let queue = self.queue.clone();
        meter
            .f64_observable_gauge("statement_queue_oldest_ready_job_age")
            .with_unit("s")
            .with_description("How long the oldest due, unclaimed job has waited (0 when none waits).")
            .with_callback(move |observer| {
                if let Some(snapshot) = queue.lock().expect("metrics lock").as_ref() {
                    observer.observe(snapshot.oldest_ready_seconds, &[]);
                }
            })
            .build();
        let queue = self.queue.clone();
        meter
            .i64_observable_gauge("statement_workers_live")
            .with_description("Worker processes that heartbeated within the last minute.")
            .with_callback(move |observer| {
                if let Some(snapshot) = queue.lock().expect("metrics lock").as_ref() {
                    observer.observe(snapshot.live_workers, &[]);
                }
            })
            .build();
        self
    }

    /// A gauge whose value `read` gives at each scrape.
    pub fn register_gauge(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        self.meter()
            .i64_observable_gauge(name)
            .with_description(help)
            .with_callback(move |observer| observer.observe(read(), &[]))
            .build();
    }

    fn meter(&self) -> Meter {
        self.provider.meter("statement-export")
    }

    /// Replaces the queue figures the gauges report.
    pub fn set_queue(&self, snapshot: QueueSnapshot) {
        *self.queue.lock().expect("metrics lock") = Some(snapshot);
        *self.queue_read_at.lock().expect("metrics lock") = Some(Instant::now());
    }

    /// Whether the queue was read less than `interval` ago.
    pub fn queue_read_is_fresh(&self, interval: Duration) -> bool {
        self.queue_read_at.lock().expect("metrics lock").is_some_and(|at| at.elapsed() < interval)
    }

    /// The Prometheus text exposition of every instrument.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads the queue figures the gauges report, through the modules that own the tables.
pub async fn queue_snapshot(db: &impl Sql, alive_within: Duration) -> Result<QueueSnapshot, DbError> {
    Ok(QueueSnapshot {
        depth_by_state: queue::depth_by_state(db).await?,
        oldest_ready_seconds: queue::oldest_ready_age(db).await?,
        live_workers: workers::count_live(db, alive_within).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_units_follow_prometheus_conventions() {
        let metrics = Metrics::new().with_queue_gauges();
        metrics.http_requests.add(1, &[KeyValue::new("route", "/health")]);
        metrics.export_duration.record(1.5, &[]);
        metrics.export_bytes.record(2048, &[]);
        metrics.register_gauge("statement_worker_running_jobs", "running", || 2);
        metrics.set_queue(QueueSnapshot {
            depth_by_state: vec![(JobState::Available, 3)],
            oldest_ready_seconds: 2.0,
            live_workers: 1,
        });
        let text = metrics.render();
        for expected in [
            "# TYPE http_server_requests_total counter",
            "http_server_requests_total{route=\"/health\"} 1",
            "# TYPE statement_export_duration_seconds histogram",
            "statement_export_duration_seconds_bucket{le=\"2.5\"} 1",
            "statement_export_size_bytes_sum 2048",
            "statement_queue_jobs{state=\"available\"} 3",
            "statement_queue_oldest_ready_job_age_seconds 2",
            "statement_workers_live 1",
            "statement_worker_running_jobs 2",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(!text.contains("otel_scope"), "no scope labels: {text}");
    }
}
