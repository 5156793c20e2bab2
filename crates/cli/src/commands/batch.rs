//! `retro apply --batch`: a long-lived apply stream, git's `update-ref --stdin` for commands.
//!
//! Commands arrive as JSON lines on stdin until EOF. Each is applied as its own checkpoint by one
//! [`Engine`] built for the whole stream, and answered with exactly one line on stdout, written
//! and flushed only once the checkpoint is durable (the engine returns after the commit's fsync),
//! so a client can drive the stream in lock-step: write a line, read its answer, repeat.
//!
//! - Blank lines (empty, or only ASCII whitespace) are skipped and answered with nothing, but they
//!   count for the line numbers, which are the input's own (1-based, as an editor shows them).
//! - A line longer than [`MAX_LINE_BYTES`] is refused as invalid without being held in memory;
//!   invalid UTF-8, malformed JSON, a bad path or an unknown command are invalid lines; a
//!   rejection or a handler failure is answered too; the stream goes on after each of them.
//! - A depot failure (the lock held past its timeout, the disk full, PostgreSQL gone) is answered
//!   like any other failure and the stream goes on: the client, which reads every answer, decides
//!   whether to retry the line, go on, or close stdin.
//! - The exit code is 0 when no line failed, else the code of the first failure's class
//!   (`crate::error::classify`, the table of docs/errors.md).
//! - stdout closed by the reader (`EPIPE`) ends the stream as EOF would: nothing more is read; the
//!   command whose answer could not be written was applied; the exit code is as above.

use std::io::{self, BufRead};

use engine::{ApplyError, CommandError, Engine};
use server::api::{Applied, LineError, LineErrorDetail, NothingWritten};

use crate::ui::Ui;

/// The longest line accepted, in bytes, without its newline: the engine's command limit (1 MiB),
/// the same as `retro apply -` reads.
pub const MAX_LINE_BYTES: usize = engine::MAX_COMMAND_BYTES;

/// Why a batch did not end with every line applied.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// stdin could not be read.
    #[error("could not read line {line} of stdin")]
    Read {
        /// The line being read.
        line: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An answer could not be written (other than the reader closing stdout, which ends the
    /// stream quietly).
    #[error("could not write the answer to line {line}")]
    Write {
        /// The line answered.
        line: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Some lines failed (each was answered on stdout); the others were applied.
    #[error("{failed} of {commands} command(s) failed; the first on line {line}")]
    Failed {
        /// Lines that failed.
        failed: u64,
        /// Commands read (blank lines not counted).
        commands: u64,
        /// The first failed line.
        line: u64,
        /// The exit code of the first failure's class.
        code: u8,
        /// The first failure.
        #[source]
        first: Box<ApplyError>,
    },
}

impl BatchError {
    /// The exit code this error ends the process with, when it decides it (`Failed`).
    pub fn exit_code(&self) -> Option<u8> {
        match self {
            BatchError::Failed { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What one read of a line found.
#[derive(Debug, PartialEq, Eq)]
enum Read {
    /// The end of the input.
    Eof,
    /// A line (in the buffer, without its newline).
    Line,
    /// A line of this many bytes, longer than the limit: skipped, not kept.
    TooLong(usize),
}

/// Reads one line into `buf` (cleared first, newline dropped), keeping at most `limit` bytes: a
/// longer line is consumed up to its newline without being stored.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>, limit: usize) -> io::Result<Read> {
    buf.clear();
    let mut total: usize = 0;
    let mut too_long = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(match (total, too_long) {
                (0, _) => Read::Eof,
                (n, true) => Read::TooLong(n),
                (_, false) => Read::Line,
            });
        }
        let newline = chunk.iter().position(|&b| b == b'\n');
        let part = &chunk[..newline.unwrap_or(chunk.len())];
        total = total.saturating_add(part.len());
        if !too_long {
            if total > limit {
                too_long = true;
                *buf = Vec::new();
            } else {
                buf.extend_from_slice(part);
            }
        }
        let used = part.len() + usize::from(newline.is_some());
        input.consume(used);
        if newline.is_some() {
            return Ok(if too_long {
                Read::TooLong(total)
            } else {
                Read::Line
            });
        }
    }
}

/// The first failure met so far.
struct First {
    line: u64,
    code: u8,
    error: ApplyError,
}

/// Runs the stream: reads `input` to its end, applies each command with `engine` in `session`,
/// answers each on `ui`'s stdout (`json`: the bodies of `retro apply --json`, or a [`LineError`]).
pub fn run(
    engine: &Engine,
    session: &str,
    json: bool,
    mut input: impl BufRead,
    ui: &mut Ui,
) -> Result<(), BatchError> {
    let mut buf = Vec::new();
    let mut line: u64 = 0;
    let mut commands: u64 = 0;
    let mut failed: u64 = 0;
    let mut first: Option<First> = None;
    loop {
        line += 1;
        let read = read_line(&mut input, &mut buf, MAX_LINE_BYTES)
            .map_err(|source| BatchError::Read { line, source })?;
        let result = match read {
            Read::Eof => break,
            Read::Line if buf.iter().all(u8::is_ascii_whitespace) => continue,
            Read::Line => engine.apply(session, &buf),
            Read::TooLong(n) => Err(ApplyError::Command(CommandError::TooLarge(n))),
        };
        commands += 1;
        let written = match result {
            Ok(applied) => answer_applied(ui, json, &Applied::from(&applied)),
            Err(err) => match NothingWritten::from_error(&err) {
                Some(body) => answer_nothing(ui, json, &body),
                None => {
                    failed += 1;
                    answer_error(ui, json, line, err, &mut first)
                }
            },
        }
        .and_then(|()| ui.flush());
        match written {
            Ok(()) => {}
            // The reader is gone: stop as at EOF (the command itself was applied).
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
            Err(source) => return Err(BatchError::Write { line, source }),
        }
    }
    match first {
        None => Ok(()),
        Some(First { line, code, error }) => Err(BatchError::Failed {
            failed,
            commands,
            line,
            code,
            first: Box::new(error),
        }),
    }
}

fn answer_applied(ui: &mut Ui, json: bool, body: &Applied) -> io::Result<()> {
    if json {
        ui.json(body)
    } else {
        ui.line(format!("ok {}", body.checkpoint))
    }
}

fn answer_nothing(ui: &mut Ui, json: bool, body: &NothingWritten) -> io::Result<()> {
    if json {
        ui.json(body)
    } else {
        ui.line(format!("nothing-written {}", depot::shown(&body.path)))
    }
}

/// Answers a failed line, and remembers it (with its class's exit code) if it is the first.
fn answer_error(
    ui: &mut Ui,
    json: bool,
    line: u64,
    err: ApplyError,
    first: &mut Option<First>,
) -> io::Result<()> {
    let code = server::apply_error_code(&err);
    let err = anyhow::Error::new(err);
    let (exit, _hint) = crate::error::classify(&err);
    let message = depot::escape_invisible(&crate::error_text(&err));
    let written = if json {
        ui.json(&LineError {
            error: LineErrorDetail { code, message },
            line,
        })
    } else {
        ui.line(format!("error {line} {code}: {message}"))
    };
    if first.is_none() {
        if let Ok(error) = err.downcast::<ApplyError>() {
            *first = Some(First {
                line,
                code: exit,
                error,
            });
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], limit: usize) -> Vec<(Read, Vec<u8>)> {
        // A tiny buffer, so that lines cross buffer boundaries.
        let mut reader = io::BufReader::with_capacity(3, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let read = read_line(&mut reader, &mut buf, limit).unwrap();
            if read == Read::Eof {
                return out;
            }
            out.push((read, buf.clone()));
        }
    }

    #[test]
    fn lines_are_split_on_newlines_and_the_last_needs_none() {
        assert_eq!(
            lines(b"ab\n\ncdefg\nh", 100),
            vec![
                (Read::Line, b"ab".to_vec()),
                (Read::Line, b"".to_vec()),
                (Read::Line, b"cdefg".to_vec()),
                (Read::Line, b"h".to_vec()),
            ]
        );
        assert!(lines(b"", 100).is_empty());
    }

    #[test]
    fn a_line_over_the_limit_is_measured_not_kept_and_the_next_line_is_intact() {
        assert_eq!(
            lines(b"abcd\nabcde\nxy\nabcdefgh", 4),
            vec![
                (Read::Line, b"abcd".to_vec()),
                (Read::TooLong(5), Vec::new()),
                (Read::Line, b"xy".to_vec()),
                (Read::TooLong(8), Vec::new()),
            ]
        );
    }
}
