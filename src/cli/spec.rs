//! `rush spec ...`: the spec format for people and editors, without a daemon.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

/// `rush spec schema`: prints the spec's JSON Schema (draft 2020-12) on stdout.
pub fn schema() -> anyhow::Result<ExitCode> {
    let text = serde_json::to_string_pretty(&crate::core::spec::json_schema()).context("rendering the JSON Schema")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").context("writing the JSON Schema to stdout")?;
    Ok(ExitCode::SUCCESS)
}
