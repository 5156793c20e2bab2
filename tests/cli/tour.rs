//! The README's five-minute tour, run as written: every `$ ` line of the ```sh blocks between
//! `<!-- tour:start -->` and `<!-- tour:end -->`, in order, in one `bash -e` script, in an empty
//! directory, with `retro` on PATH and `$FIXTURES` set.

use std::fs;

use crate::common::*;

const START: &str = "<!-- tour:start -->";
const END: &str = "<!-- tour:end -->";

/// The tour's commands: `$ ` lines inside ```sh fences between the markers.
fn tour_commands(readme: &str) -> Result<Vec<String>, String> {
    let start = readme
        .find(START)
        .ok_or_else(|| format!("README.md has no '{START}' marker"))?;
    let rest = &readme[start + START.len()..];
    let end = rest
        .find(END)
        .ok_or_else(|| format!("README.md has no '{END}' marker after '{START}'"))?;
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in rest[..end].lines() {
        let trimmed = line.trim_end();
        if !in_sh {
            if trimmed.trim_start().starts_with("```sh") {
                in_sh = true;
            }
            continue;
        }
        if trimmed.trim_start().starts_with("```") {
            in_sh = false;
            continue;
        }
        if let Some(command) = trimmed.strip_prefix("$ ") {
            commands.push(command.to_owned());
        }
    }
    if in_sh {
        return Err("a ```sh block between the tour markers is not closed".to_owned());
    }
    if commands.is_empty() {
        return Err("the tour has no '$ ' lines in ```sh blocks between its markers".to_owned());
    }
    Ok(commands)
}

#[test]
fn tour_parser() {
    let readme = "intro\n```sh\n$ not this\n```\n<!-- tour:start -->\n```sh\n$ retro init\noutput\n$ S=$(retro session start)\n```\n```text\n$ not this either\n```\n```sh\n$ retro log\n```\n<!-- tour:end -->\n```sh\n$ nor this\n```\n";
    assert_eq!(
        tour_commands(readme).unwrap(),
        ["retro init", "S=$(retro session start)", "retro log"]
    );
    assert!(tour_commands("no markers").is_err());
    assert!(tour_commands("<!-- tour:start -->\n```sh\n$ x\n```\n").is_err());
}

#[test]
fn readme_tour_runs() {
    let path = repo_root().join("README.md");
    let readme = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is unreadable ({e}): the tour test needs a README.md with a ```sh block of '$ ' lines between '{START}' and '{END}'",
            path.display()
        )
    });
    let commands = tour_commands(&readme).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for command in &commands {
        assert!(
            !command.contains("RETRO_DEPOT"),
            "the tour must not set RETRO_DEPOT (it runs in one directory): {command}"
        );
    }
    let script = commands.join("\n") + "\n";
    let work = tempfile::tempdir().unwrap();
    let bin_dir = bin().parent().unwrap().to_path_buf();
    let path_var = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let out = run(assert_cmd::Command::new("bash")
        .arg("-e")
        .arg("-c")
        .arg(&script)
        .current_dir(work.path())
        .env("PATH", path_var)
        .env("FIXTURES", fixtures())
        .env("NO_COLOR", "1")
        .env_remove("RETRO_DEPOT")
        .env_remove("RETRO_SESSION")
        .env_remove("RETRO_MANIFEST"));
    assert_no_panic(&out.stderr);
    assert_eq!(
        out.code, 0,
        "the README tour failed (exit {})\nscript:\n{script}\nstdout:\n{}\nstderr:\n{}",
        out.code, out.stdout, out.stderr
    );
    // It ran in the working directory, as the reader would.
    assert!(work.path().join(".retro/config").is_file());
}
