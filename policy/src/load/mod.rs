//! The policy loader: YAML text in, a validated [`Policy`] or every diagnostic out.
mod build;
pub(crate) use build::selector_matches as build_selector_matches;
pub mod node;

use crate::diag::{Diagnostic, Diagnostics};
use crate::model::Policy;
use std::path::Path;

/// Loads a policy from text. `file` names the source in diagnostics.
pub fn load_str(file: &str, text: &str) -> Result<Policy, Diagnostics> {
    let fail = |items: Vec<Diagnostic>| Diagnostics {
        file: file.to_string(),
        items,
    };
    if text.trim().is_empty() {
        return Err(fail(vec![Diagnostic::new(1, 1, "policy file is empty")
            .with_hint(
                "start from examples/logistics/policy.yaml or see docs/policy.md",
            )]));
    }
    let root =
        node::parse(text).map_err(|e| fail(vec![Diagnostic::new(e.line, e.col, e.message)]))?;
    if matches!(root.value, node::Value::Null) {
        return Err(fail(vec![Diagnostic::new(1, 1, "policy file is empty")
            .with_hint(
                "start from examples/logistics/policy.yaml or see docs/policy.md",
            )]));
    }
    build::build(&root, text).map_err(|mut items| {
        items.sort_by_key(|d| (d.line, d.col));
        fail(items)
    })
}

/// Loads a policy from bytes, rejecting binary and non-UTF-8 input with a positioned diagnostic.
pub fn load_bytes(file: &str, bytes: &[u8]) -> Result<Policy, Diagnostics> {
    let fail = |d: Diagnostic| Diagnostics {
        file: file.to_string(),
        items: vec![d],
    };
    if let Some(i) = bytes.iter().position(|b| *b == 0) {
        let (line, col) = position_of(bytes, i);
        return Err(fail(Diagnostic::new(
            line,
            col,
            "file is binary, not a YAML policy (NUL byte)",
        )));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => load_str(file, text),
        Err(e) => {
            let (line, col) = position_of(bytes, e.valid_up_to());
            Err(fail(
                Diagnostic::new(line, col, "file is not valid UTF-8 text")
                    .with_hint("save the policy as UTF-8"),
            ))
        }
    }
}

/// Reads and loads a policy file.
pub fn load_path(path: &Path) -> Result<(Policy, Vec<u8>), Diagnostics> {
    let file = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => load_bytes(&file, &bytes).map(|p| (p, bytes)),
        Err(e) => Err(Diagnostics {
            file,
            items: vec![Diagnostic::new(1, 1, format!("cannot read file: {e}"))],
        }),
    }
}

/// 1-based line and column (in characters) of a byte offset; invalid UTF-8 counts per byte.
fn position_of(bytes: &[u8], offset: usize) -> (u64, u64) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[start..]).chars().count() as u64 + 1;
    (line, col)
}
