//! What the bench measures, as printed (`--output json` keeps the flat field names of the
//! first version: the parts are flattened).

use super::run_secs;
use passerelle_store::SyncRun;

#[derive(Debug, serde::Serialize)]
pub(super) struct Figures {
    #[serde(flatten)]
    pub throughput: Throughput,
    #[serde(flatten)]
    pub latency: Latency,
    pub idle_worker_rss_mb: Option<f64>,
    #[serde(flatten)]
    pub scheduler: SchedulerFigures,
    #[serde(flatten)]
    pub rate_limited: RateLimited,
    /// Each ERP simulator under its published (or self-imposed) limit, time-compressed.
    pub erp_limits: Vec<LimitedRun>,
}

/// One worker exporting to the zero-latency custom-API simulator.
#[derive(Debug, serde::Serialize)]
pub(super) struct Throughput {
    pub orders: i64,
    pub worker_records_per_sec: f64,
    pub worker_run_secs: f64,
}

/// From the `sync` call to the ERP's first write, on an idle fleet.
#[derive(Debug, serde::Serialize)]
pub(super) struct Latency {
    pub sync_to_first_call_p50_ms: f64,
    pub sync_to_first_call_p95_ms: f64,
    pub latency_samples: usize,
}

/// Due integrations enqueued by one scheduler tick.
#[derive(Debug, serde::Serialize)]
pub(super) struct SchedulerFigures {
    pub scheduler_integrations: i64,
    pub scheduler_enqueue_secs: f64,
    pub scheduler_per_sec: f64,
}

/// An export to the custom-API simulator under its rate limit.
#[derive(Debug, serde::Serialize)]
pub(super) struct RateLimited {
    pub rate_limit_per_sec: u32,
    pub rate_limited_records: i64,
    pub rate_limited_records_per_sec: f64,
    pub rate_limit_share_of_ceiling: f64,
    pub rate_limited_429s: u64,
    pub rate_limited_max_in_window: u64,
}

/// An export to one ERP simulator under its limit.
#[derive(Debug, serde::Serialize)]
pub(super) struct LimitedRun {
    erp: String,
    records: i64,
    records_per_sec: f64,
    ceiling_per_sec: f64,
    share_of_ceiling: f64,
    requests: u64,
    answered_429: u64,
    max_in_window: u64,
}

impl LimitedRun {
    pub fn new(
        erp: &str,
        run: &SyncRun,
        ceiling_per_sec: f64,
        requests: u64,
        answered_429: u64,
        max_in_window: u64,
    ) -> Self {
        let records_per_sec = f64::from(run.records_synced) / run_secs(run).max(1e-9);
        Self {
            erp: erp.to_owned(),
            records: i64::from(run.records_synced),
            records_per_sec,
            ceiling_per_sec,
            share_of_ceiling: records_per_sec / ceiling_per_sec,
            requests,
            answered_429,
            max_in_window,
        }
    }

    fn summary_line(&self) -> String {
        format!(
            "{:<22} {:.1} records/s of a {:.0} records/s ceiling = {:.1}% ({} records in {} calls; {} answered 429/503, at most {} in one window)\n",
            self.erp,
            self.records_per_sec,
            self.ceiling_per_sec,
            self.share_of_ceiling * 100.0,
            self.records,
            self.requests,
            self.answered_429,
            self.max_in_window
        )
    }
}

impl Figures {
    /// The table output: one line per figure.
    pub fn summary(&self) -> String {
        let Self {
            throughput: t,
            latency: l,
            scheduler: s,
            rate_limited: r,
            ..
        } = self;
        format!(
            "worker throughput      {:.0} records/s ({} orders in {:.2} s, one worker, zero-latency simulator)\n\
             sync → first ERP call  p50 {:.1} ms, p95 {:.1} ms ({} runs, idle fleet)\n\
             rate-limited export    {:.1} records/s under a {}/s limit = {:.1}% of the ceiling; {} answered 429, at most {} in one window\n\
             idle worker memory     {}\n\
             scheduler              {} due integrations enqueued in {:.2} s ({:.0}/s)\n",
            t.worker_records_per_sec,
            t.orders,
            t.worker_run_secs,
            l.sync_to_first_call_p50_ms,
            l.sync_to_first_call_p95_ms,
            l.latency_samples,
            r.rate_limited_records_per_sec,
            r.rate_limit_per_sec,
            r.rate_limit_share_of_ceiling * 100.0,
            r.rate_limited_429s,
            r.rate_limited_max_in_window,
            self.idle_worker_rss_mb
                .map(|m| format!("{m:.1} MB resident"))
                .unwrap_or_else(|| "unknown".into()),
            s.scheduler_integrations,
            s.scheduler_enqueue_secs,
            s.scheduler_per_sec,
        ) + &self
            .erp_limits
            .iter()
            .map(LimitedRun::summary_line)
            .collect::<String>()
    }
}
