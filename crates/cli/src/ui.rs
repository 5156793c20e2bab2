//! Output: data to stdout (buffered, `--json` twins), status to stderr, colour only on a terminal
//! and never with `NO_COLOR`, progress bars only on a terminal.
//!
//! A progress line shows a rounded rate (`18,668/s`, never `18,668.0136/s`), and when the total
//! is known a percentage and an ETA: `[bar] 4,200/10,000 lines imported 42% 18,668/s eta 1s`.
//! The formatting is pure functions ([`count_text`], [`rate_text`], [`percent_text`],
//! [`eta_text`]) plugged into indicatif as template keys.

use std::io::{self, BufWriter, Stdout, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use is_terminal::IsTerminal;

/// Where a command writes.
pub struct Ui {
    out: BufWriter<Stdout>,
    color: bool,
    progress: bool,
}

impl Ui {
    /// Standard output and error as this process has them.
    pub fn new() -> Ui {
        let stdout_tty = io::stdout().is_terminal();
        let stderr_tty = io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let ci = std::env::var_os("CI").is_some();
        Ui {
            out: BufWriter::with_capacity(1 << 16, io::stdout()),
            color: stdout_tty && !no_color,
            progress: stderr_tty && !ci,
        }
    }

    /// The data stream.
    pub fn out(&mut self) -> &mut BufWriter<Stdout> {
        &mut self.out
    }

    /// Writes one line of data.
    pub fn line(&mut self, text: impl AsRef<str>) -> io::Result<()> {
        self.out.write_all(text.as_ref().as_bytes())?;
        self.out.write_all(b"\n")
    }

    /// Writes one JSON value as a line.
    pub fn json(&mut self, value: &impl serde::Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }

    /// Flushes the data stream.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Text in yellow on a colour terminal (ids, like git).
    pub fn yellow(&self, text: &str) -> String {
        self.paint("33", text)
    }

    /// Text in green.
    pub fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }

    /// Text in red.
    pub fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }

    /// Dimmed text.
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// A progress bar on stderr for long work (hidden in pipes and CI). `len` 0 is a spinner
    /// (the total is unknown: a count and a rate); otherwise a bar with the percentage and ETA.
    pub fn progress(&self, len: u64, what: &str) -> ProgressBar {
        self.progress_bar(len, what, false)
    }

    /// Like [`Ui::progress`], counting bytes of a total of `len` bytes (reading a file).
    pub fn progress_bytes(&self, len: u64, what: &str) -> ProgressBar {
        self.progress_bar(len, what, true)
    }

    fn progress_bar(&self, len: u64, what: &str, bytes: bool) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = if len == 0 {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::new(len)
        };
        let template = match (len == 0, bytes) {
            (true, false) => "{spinner} {msg} {count} {rate}",
            (true, true) => "{spinner} {msg} {bytes} {bytes_per_sec}",
            (false, false) => "{bar:40} {count}/{total} {msg} {percent_text} {rate} {eta_text}",
            (false, true) => {
                "{bar:40} {bytes}/{total_bytes} {msg} {percent_text} {bytes_per_sec} {eta_text}"
            }
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(
                style
                    .with_key("count", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&count_text(s.pos()));
                    })
                    .with_key("total", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&count_text(s.len().unwrap_or(0)));
                    })
                    .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&rate_text(s.per_sec()));
                    })
                    .with_key(
                        "percent_text",
                        |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = w.write_str(&percent_text(s.pos(), s.len().unwrap_or(0)));
                        },
                    )
                    .with_key(
                        "eta_text",
                        |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                            if let Some(eta) = eta_text(s.pos(), s.len().unwrap_or(0), s.per_sec())
                            {
                                let _ = write!(w, "eta {eta}");
                            }
                        },
                    ),
            );
        }
        bar.set_message(what.to_owned());
        bar
    }
}

/// `n` with thousands separators: `18668` → `18,668`.
pub fn count_text(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate per second, rounded: `18,668/s`; one decimal below 10 (`2.5/s`), `0/s` when there is
/// no rate yet (or a nonsensical one).
pub fn rate_text(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return "0/s".to_owned();
    }
    if per_sec < 9.95 {
        return format!("{per_sec:.1}/s");
    }
    // Saturates at u64::MAX for absurd values: `as` on a float never panics.
    format!("{}/s", count_text(per_sec.round() as u64))
}

/// How far `pos` is through `len`, in whole percent, never above 100: `42%`; empty without a
/// total.
pub fn percent_text(pos: u64, len: u64) -> String {
    if len == 0 {
        return String::new();
    }
    let percent = (u128::from(pos.min(len)) * 100 / u128::from(len)) as u64;
    format!("{percent}%")
}

/// The time left for the `len - pos` items still to do at `per_sec`: `45s`, `3m07s`, `2h05m`;
/// `None` when it cannot be told (no total, no rate yet) or nothing is left.
pub fn eta_text(pos: u64, len: u64, per_sec: f64) -> Option<String> {
    if len == 0 || pos >= len || !per_sec.is_finite() || per_sec <= 0.0 {
        return None;
    }
    let seconds = ((len - pos) as f64 / per_sec).ceil();
    if !seconds.is_finite() || seconds > Duration::MAX.as_secs_f64() {
        return None;
    }
    let secs = seconds as u64;
    Some(match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    })
}

/// Prints a status line on stderr (not data).
pub fn status(text: impl AsRef<str>) {
    let _ = writeln!(io::stderr(), "{}", text.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i16_13_progress_rates_are_rounded_with_separators() {
        assert_eq!(rate_text(18_668.013_6), "18,668/s");
        assert_eq!(rate_text(1_234_567.5), "1,234,568/s");
        assert_eq!(rate_text(999.4), "999/s");
        assert_eq!(rate_text(10.0), "10/s");
        assert_eq!(rate_text(9.96), "10/s");
        assert_eq!(rate_text(2.46), "2.5/s");
        assert_eq!(rate_text(0.0), "0/s");
        assert_eq!(rate_text(-3.0), "0/s");
        assert_eq!(rate_text(f64::NAN), "0/s");
        assert_eq!(rate_text(f64::INFINITY), "0/s");
        assert_eq!(rate_text(1e30), format!("{}/s", count_text(u64::MAX)));
        assert_eq!(count_text(0), "0");
        assert_eq!(count_text(999), "999");
        assert_eq!(count_text(1_000), "1,000");
        assert_eq!(count_text(18_668), "18,668");
        assert_eq!(count_text(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn i16_13_progress_shows_percent_and_eta_when_the_total_is_known() {
        assert_eq!(percent_text(0, 10), "0%");
        assert_eq!(percent_text(42, 100), "42%");
        assert_eq!(percent_text(2, 3), "66%");
        assert_eq!(percent_text(10, 10), "100%");
        assert_eq!(percent_text(11, 10), "100%");
        assert_eq!(percent_text(u64::MAX, u64::MAX), "100%");
        assert_eq!(percent_text(5, 0), "", "no total, no percentage");

        assert_eq!(eta_text(0, 100, 10.0).as_deref(), Some("10s"));
        assert_eq!(eta_text(50, 100, 3.0).as_deref(), Some("17s"));
        assert_eq!(eta_text(0, 187, 1.0).as_deref(), Some("3m07s"));
        assert_eq!(eta_text(0, 7_500, 1.0).as_deref(), Some("2h05m"));
        assert_eq!(eta_text(100, 100, 10.0), None, "done");
        assert_eq!(eta_text(0, 100, 0.0), None, "no rate yet");
        assert_eq!(eta_text(0, 0, 10.0), None, "no total");
        assert_eq!(eta_text(0, u64::MAX, f64::MIN_POSITIVE), None);
    }
}
