//! The report as text, JSON (`{"checks": [...], "passed": bool}`) and SARIF 2.1.0.
//!
//! Every check id appears in every format. Nothing here sees a value: findings hold a file,
//! a line, a rule and a message.

use serde_json::{Value, json};

use super::{REMINDERS, Report, Status};
use crate::scrub::printable;

/// One line per check, its findings beneath, the skipped counts and the reminders.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    for c in &r.checks {
        let status = match c.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Warn => "WARN",
            Status::Skip => "SKIP",
        };
        out.push_str(&format!(
            "{status}  {:<24} {}\n",
            c.id,
            printable(&c.summary)
        ));
        for f in &c.findings {
            out.push_str(&format!(
                "      {}:{}  [{}]  {}\n",
                printable(&f.file),
                f.line,
                printable(&f.rule),
                printable(&f.message)
            ));
        }
        if matches!(c.status, Status::Fail | Status::Warn) && !c.fix.is_empty() {
            out.push_str(&format!("      fix: {}\n", c.fix));
        }
    }
    for (file, e) in &r.skipped.unreadable {
        out.push_str(&format!(
            "note  {}: skipped ({})\n",
            printable(file),
            printable(e)
        ));
    }
    out.push_str("reminders (no program can check these):\n");
    for rem in REMINDERS {
        out.push_str(&format!("  - {rem}\n"));
    }
    out.push_str(if r.passed {
        "preflight passed\n"
    } else {
        "preflight FAILED\n"
    });
    out
}

/// The JSON document.
pub fn json(r: &Report) -> Value {
    json!({
        "checks": r.checks.iter().map(|c| json!({
            "id": c.id,
            "status": c.status,
            "findings": c.findings,
            "fix": c.fix,
            "summary": c.summary,
        })).collect::<Vec<_>>(),
        "passed": r.passed,
        "files_scanned": r.files_scanned,
        "skipped": {
            "binary": r.skipped.binary,
            "over_1_mib": r.skipped.large,
            "unreadable": r.skipped.unreadable.iter().map(|(f, e)| json!({"file": f, "error": e})).collect::<Vec<_>>(),
        },
    })
}

/// SARIF 2.1.0: one run, one rule per check (every check id), one result per finding with
/// a `physicalLocation` and `region.startLine`. A check that fails or warns without a
/// finding gets one result on the scanned directory itself (`.`, line 1).
pub fn sarif(r: &Report) -> Value {
    let rules: Vec<Value> = r
        .checks
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "shortDescription": {"text": c.id},
                "help": {"text": if c.fix.is_empty() { c.id.to_string() } else { c.fix.clone() }},
                "properties": {"status": c.status},
            })
        })
        .collect();
    let level = |s: Status| match s {
        Status::Fail => "error",
        Status::Warn => "warning",
        _ => "note",
    };
    let mut results = Vec::new();
    for (i, c) in r.checks.iter().enumerate() {
        let mut add = |file: &str, line: u64, rule: &str, message: &str| {
            results.push(json!({
                "ruleId": c.id,
                "ruleIndex": i,
                "level": level(c.status),
                "message": {"text": format!("{message} [{rule}]")},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": file},
                    "region": {"startLine": line.max(1)},
                }}],
            }));
        };
        for f in &c.findings {
            add(&f.file, f.line, &f.rule, &f.message);
        }
        if c.findings.is_empty() && matches!(c.status, Status::Fail | Status::Warn) {
            add(".", 1, c.id, &c.summary);
        }
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "agentrun preflight",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/agentrun/agentrun",
                "rules": rules,
            }},
            "results": results,
        }],
    })
}
