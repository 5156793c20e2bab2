//! `retro`: the command line. Parses arguments, runs one command, maps errors to exit codes.
//! Logic lives in the depot and engine crates; this crate is the command line plus glue.

mod args;
mod commands;
mod error;
mod locate;
mod render;
mod ui;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

/// retro allocates many small objects (ids, names, encoded objects); mimalloc is markedly faster
/// than the system allocator at that (about +30% on the bulk import path).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let kind = match cause.downcast_ref::<io::Error>() {
            Some(e) => Some(e.kind()),
            // serde_json's writer errors wrap the io::Error without exposing it as a source.
            None => cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind),
        };
        kind == Some(io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes joined by `: `, skipping a cause whose text the message before it
/// already ends with (several error types print their source themselves).
pub(crate) fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

/// Git's `log -3`: a `-<digits>` argument after the `log` subcommand (and before `--`) means
/// `-n <digits>`. Everything else passes through unchanged.
fn git_style_counts(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut in_log = false;
    let mut after_dashes = false;
    for arg in args {
        let text = arg.to_str().unwrap_or_default();
        if in_log && !after_dashes {
            if text == "--" {
                after_dashes = true;
            } else if let Some(n) = text.strip_prefix('-') {
                if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                    out.push("-n".into());
                    out.push(n.into());
                    continue;
                }
            }
        } else if !in_log && text == "log" {
            in_log = true;
        }
        out.push(arg);
    }
    out
}

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse_from(git_style_counts(std::env::args_os())) {
        Ok(cli) => cli,
        Err(err) => {
            let code = match err.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    error::OK
                }
                _ => error::USAGE,
            };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    let mut ui = ui::Ui::new();
    let result = commands::run(cli, &mut ui).and_then(|()| ui.flush().map_err(Into::into));
    match result {
        Ok(()) => ExitCode::from(error::OK),
        // `retro log | head`: the reader went away; that is not an error.
        Err(err) if is_broken_pipe(&err) => ExitCode::from(error::OK),
        Err(err) => {
            let _ = ui.flush();
            let (code, hint) = error::classify(&err);
            let mut stderr = io::stderr().lock();
            // User text in errors is escaped where it is quoted (`depot::shown`); this is the
            // net under that: nothing invisible reaches the terminal.
            let text = depot::escape_invisible(&error_text(&err));
            let _ = writeln!(stderr, "retro: error: {text}");
            if let Some(hint) = hint {
                let _ = writeln!(stderr, "hint: {}", depot::escape_invisible(&hint));
            }
            ExitCode::from(code)
        }
    }
}
