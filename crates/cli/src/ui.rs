//! Output: data to stdout (buffered, `--json` twins), status to stderr, colour only on a terminal
//! and never with `NO_COLOR`, progress bars only on a terminal.

use std::io::{self, BufWriter, Stdout, Write};

use indicatif::{ProgressBar, ProgressStyle};
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

    /// A progress bar on stderr for long work (hidden in pipes and CI). `len` 0 is a spinner.
    pub fn progress(&self, len: u64, what: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = if len == 0 {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::new(len)
        };
        let template = if len == 0 {
            "{spinner} {msg} {pos} {per_sec}"
        } else {
            "{bar:40} {pos}/{len} {msg} {per_sec} eta {eta}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message(what.to_owned());
        bar
    }
}

/// Prints a status line on stderr (not data).
pub fn status(text: impl AsRef<str>) {
    let _ = writeln!(io::stderr(), "{}", text.as_ref());
}
