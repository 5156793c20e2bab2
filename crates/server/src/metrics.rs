//! `GET /metrics`: the server's counters in the Prometheus text exposition format, version 0.0.4
//! (`# HELP`, `# TYPE`, then one `name{label="value"} number` line per sample).
//!
//! [`Metrics`] holds what this server process counted since it started (the counters start at
//! zero with each process, as Prometheus expects of counters): checkpoints written, commands
//! rejected, conflicts, the duration of each apply (a histogram), and HTTP requests by route and
//! status. What the depot itself says (how far each durable consumer is behind `HEAD`) is read
//! when scraped, by [`render`]'s caller.
//!
//! The format is written here by hand, not with the `prometheus-client` crate: that crate writes
//! OpenMetrics 1.0 (`# EOF`, `_created` series, its own content type), not the 0.0.4 text format
//! asked for, and what is needed (a few counters, one fixed-bucket histogram, label escaping) is
//! less code than adapting it. See `docs/http.md` for every metric.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::api::{ConsumerStatus, ProjectionView};

/// The content type of the text format, version 0.0.4.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The upper bounds of `retro_commit_duration_seconds`'s buckets, in seconds: 100 us to 10 s
/// (an fsync on a fast disk is well under a millisecond, a slow handler or a contended lock
/// seconds); `+Inf` follows.
pub(crate) const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How an apply ended, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A checkpoint was written.
    Committed,
    /// The command's handler rejected it (recorded as a failed command).
    Rejected,
    /// The aggregate kept changing: the compare-and-swap was lost on every attempt.
    Conflict,
    /// The command id was already applied: nothing ran or was written (counted by the HTTP
    /// status only).
    Replayed,
    /// Anything else (malformed, unknown command, nothing to write, a failing handler, the
    /// depot failing): counted by the HTTP status only.
    Other,
}

impl Outcome {
    /// The outcome of an engine result.
    pub(crate) fn of(result: &Result<engine::Applied, engine::ApplyError>) -> Outcome {
        match result {
            Ok(applied) if applied.replayed => Outcome::Replayed,
            Ok(_) => Outcome::Committed,
            Err(engine::ApplyError::Rejected { .. }) => Outcome::Rejected,
            // A command id reused for another command: the request's mistake, not a lost race.
            Err(engine::ApplyError::CommandIdReused { .. }) => Outcome::Other,
            Err(err) if err.class() == depot::ErrorClass::Conflict => Outcome::Conflict,
            Err(_) => Outcome::Other,
        }
    }

    /// Its name, as the `apply` span's `outcome` field shows it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::Rejected => "rejected",
            Outcome::Conflict => "conflict",
            Outcome::Replayed => "replayed",
            Outcome::Other => "failed",
        }
    }
}

/// A histogram with [`DURATION_BUCKETS`]: a count per bucket (not cumulative; summed when
/// rendered), the total count, and the sum in nanoseconds.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|&le| seconds <= le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// What this server process counted. Cheap to update from any thread.
#[derive(Default)]
pub(crate) struct Metrics {
    commits: AtomicU64,
    rejections: AtomicU64,
    conflicts: AtomicU64,
    duration: Histogram,
    /// Requests answered, by route (its path pattern, or `unmatched`) and status.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// When the process started counting (seconds since the Unix epoch).
    started: f64,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            ..Metrics::default()
        }
    }

    /// Counts one apply that ended in `outcome` after `duration` (the whole apply: parsing,
    /// rehydrating, the handler, the commit and its fsync). Commits and rejections are timed in
    /// the histogram (both write: a checkpoint, or the failed command's record); conflicts are
    /// counted only.
    pub(crate) fn apply(&self, outcome: Outcome, duration: Duration) {
        let counter = match outcome {
            Outcome::Committed => &self.commits,
            Outcome::Rejected => &self.rejections,
            Outcome::Conflict => &self.conflicts,
            Outcome::Replayed | Outcome::Other => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if matches!(outcome, Outcome::Committed | Outcome::Rejected) {
            self.duration.observe(duration);
        }
    }

    /// Counts one answered request.
    pub(crate) fn request(&self, route: &'static str, status: u16) {
        // A poisoned map only means another thread panicked mid-increment: keep counting.
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests.entry((route, status)).or_default() += 1;
    }

    /// The exposition: this process's counters and `consumers` (read from the depot by the
    /// caller), without projections.
    #[cfg(test)]
    pub(crate) fn render(&self, consumers: &[ConsumerStatus]) -> String {
        self.render_with(consumers, &[])
    }

    /// The exposition: this process's counters, `consumers` and `projections` (read from the
    /// depot by the caller).
    pub(crate) fn render_with(
        &self,
        consumers: &[ConsumerStatus],
        projections: &[ProjectionView],
    ) -> String {
        let mut out = Text::default();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.family(
            "retro_commits_total",
            "counter",
            "Checkpoints written by POST /apply through this server process.",
        );
        out.sample("retro_commits_total", &[], load(&self.commits));
        out.family(
            "retro_commit_rejections_total",
            "counter",
            "Commands rejected by their handler (recorded as failed commands), through this server process.",
        );
        out.sample("retro_commit_rejections_total", &[], load(&self.rejections));
        out.family(
            "retro_commit_conflicts_total",
            "counter",
            "Applies that gave up because the aggregate kept changing (compare-and-swap lost on every attempt).",
        );
        out.sample("retro_commit_conflicts_total", &[], load(&self.conflicts));

        let name = "retro_commit_duration_seconds";
        out.family(
            name,
            "histogram",
            "Duration of each apply that committed or was rejected: parsing, rehydrating, the handler, the commit and its fsync.",
        );
        let mut cumulative = 0;
        for (le, bucket) in DURATION_BUCKETS.iter().zip(&self.duration.buckets) {
            cumulative += load(bucket);
            out.sample(
                "retro_commit_duration_seconds_bucket",
                &[("le", &format_float(*le))],
                cumulative,
            );
        }
        // Read the count after the buckets: an observation landing meanwhile can only make
        // `+Inf` larger than the last bucket, never smaller.
        let count = load(&self.duration.count).max(cumulative);
        out.sample(
            "retro_commit_duration_seconds_bucket",
            &[("le", "+Inf")],
            count,
        );
        out.sample_float(
            "retro_commit_duration_seconds_sum",
            &[],
            load(&self.duration.sum_nanos) as f64 / 1e9,
        );
        out.sample("retro_commit_duration_seconds_count", &[], count);

        out.family(
            "retro_consumer_lag_checkpoints",
            "gauge",
            "Checkpoints of HEAD's first-parent history after each durable consumer's position (refs/consumers/NAME); none for a consumer whose position is not on that history.",
        );
        for consumer in consumers {
            if let Some(behind) = consumer.behind {
                out.sample(
                    "retro_consumer_lag_checkpoints",
                    &[("consumer", &consumer.name)],
                    behind,
                );
            }
        }
        out.family(
            "retro_projection_lag_checkpoints",
            "gauge",
            "Checkpoints of HEAD's first-parent history after each projection's live generation's position (refs/projections/NAME/gen-N); none for a projection that never ran or whose position is not on that history.",
        );
        for projection in projections {
            if let Some(behind) = projection.live.as_ref().and_then(|l| l.behind) {
                out.sample(
                    "retro_projection_lag_checkpoints",
                    &[("projection", &projection.name)],
                    behind,
                );
            }
        }
        out.family(
            "retro_projection_parked",
            "gauge",
            "Generations of each projection parked on a failing batch (retro project status shows it; retro project retry un-parks).",
        );
        for projection in projections {
            if projection.live.is_some() {
                out.sample(
                    "retro_projection_parked",
                    &[("projection", &projection.name)],
                    projection.parked.len() as u64,
                );
            }
        }

        out.family(
            "retro_http_requests_total",
            "counter",
            "HTTP requests answered by this server process, by route pattern (unmatched: no route) and status.",
        );
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for ((route, status), n) in requests {
            out.sample(
                "retro_http_requests_total",
                &[("route", route), ("status", &status.to_string())],
                n,
            );
        }
        out.family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the server process since the Unix epoch, in seconds.",
        );
        out.sample_float("process_start_time_seconds", &[], self.started);
        out.0
    }
}

/// The consumer groups' families: each group's largest slot lag, live members and slots without a
/// live lease (read from the depot by the caller, after [`Metrics::render`]'s text).
pub(crate) fn render_groups(groups: &[crate::api::GroupStatusBody]) -> String {
    let mut out = Text::default();
    out.family(
        "retro_group_lag_checkpoints",
        "gauge",
        "Checkpoints of each consumer group's ref after its furthest-behind slot's position; none for a group with a slot off that history.",
    );
    for group in groups {
        if let Some(behind) = group.behind {
            out.sample(
                "retro_group_lag_checkpoints",
                &[("group", &group.name)],
                behind,
            );
        }
    }
    out.family(
        "retro_group_members",
        "gauge",
        "Live members of each consumer group (heartbeat not expired).",
    );
    for group in groups {
        out.sample(
            "retro_group_members",
            &[("group", &group.name)],
            group.members.len() as u64,
        );
    }
    out.family(
        "retro_group_unowned_slots",
        "gauge",
        "Slots of each consumer group without a live lease: their partitions are not being consumed.",
    );
    for group in groups {
        out.sample(
            "retro_group_unowned_slots",
            &[("group", &group.name)],
            u64::from(group.unowned),
        );
    }
    out.0
}

/// The text being written.
#[derive(Default)]
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.labels(name, labels);
        let _ = writeln!(self.0, " {value}");
    }

    fn sample_float(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.labels(name, labels);
        let _ = writeln!(self.0, " {}", format_float(value));
    }

    fn labels(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.0.push_str(name);
        if labels.is_empty() {
            return;
        }
        self.0.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            let _ = write!(self.0, "{label}=\"{}\"", escape_label_value(value));
        }
        self.0.push('}');
    }
}

/// A label value as the format wants it between quotes: `\` as `\\`, `"` as `\"`, a line feed as
/// `\n`; everything else (any UTF-8) as it is.
pub(crate) fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A `# HELP` text: `\` as `\\` and a line feed as `\n` (quotes stay).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A float as the format (Go's `ParseFloat`) reads it: `+Inf`, `-Inf`, `NaN`, else Rust's
/// shortest round-trip form (`0.0001`, `10`, `1.5`).
fn format_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label_value("plain/name-1"), "plain/name-1");
        assert_eq!(escape_label_value(r"a\b"), r"a\\b");
        assert_eq!(escape_label_value(r#"say "hi""#), r#"say \"hi\""#);
        assert_eq!(escape_label_value("two\nlines"), r"two\nlines");
        assert_eq!(escape_label_value("\\\"\n"), r#"\\\"\n"#);
        assert_eq!(escape_label_value("ünï"), "ünï");
        assert_eq!(escape_help("a\\b\nc \"d\""), "a\\\\b\\nc \"d\"");
    }

    #[test]
    fn a_consumer_name_needing_escapes_is_one_well_formed_line() {
        let metrics = Metrics::new();
        let consumers = [ConsumerStatus {
            name: "we\"ird\\\nname".to_owned(),
            position: None,
            behind: Some(3),
        }];
        let text = metrics.render(&consumers);
        assert!(
            text.lines()
                .any(|l| l == r#"retro_consumer_lag_checkpoints{consumer="we\"ird\\\nname"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn durations_fall_in_their_buckets_and_the_sum_adds_up() {
        let metrics = Metrics::new();
        metrics.apply(Outcome::Committed, Duration::from_micros(50));
        metrics.apply(Outcome::Committed, Duration::from_millis(3));
        metrics.apply(Outcome::Rejected, Duration::from_secs(20));
        metrics.apply(Outcome::Conflict, Duration::from_secs(1));
        metrics.apply(Outcome::Other, Duration::from_secs(1));
        let text = metrics.render(&[]);
        let value = |line: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(line))
                .and_then(|v| v.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {line} in\n{text}"))
                .to_owned()
        };
        assert_eq!(
            value(r#"retro_commit_duration_seconds_bucket{le="0.0001"}"#),
            "1"
        );
        assert_eq!(
            value(r#"retro_commit_duration_seconds_bucket{le="0.0025"}"#),
            "1"
        );
        assert_eq!(
            value(r#"retro_commit_duration_seconds_bucket{le="0.005"}"#),
            "2"
        );
        assert_eq!(
            value(r#"retro_commit_duration_seconds_bucket{le="10"}"#),
            "2"
        );
        assert_eq!(
            value(r#"retro_commit_duration_seconds_bucket{le="+Inf"}"#),
            "3"
        );
        assert_eq!(value("retro_commit_duration_seconds_count"), "3");
        let sum: f64 = value("retro_commit_duration_seconds_sum").parse().unwrap();
        assert!((sum - 20.00305).abs() < 1e-9, "{sum}");
        assert_eq!(value("retro_commits_total"), "2");
        assert_eq!(value("retro_commit_rejections_total"), "1");
        assert_eq!(value("retro_commit_conflicts_total"), "1");
    }
}
