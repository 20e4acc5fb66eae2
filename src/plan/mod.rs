//! The plan file: loading with spans, checks, diagnostics (plan-format.md).

// Diagnostics travel only on the error path of loading a small file; their size costs nothing.
#![allow(clippy::result_large_err)]

pub mod check;
pub mod de;
pub mod diagnostic;
pub mod key_ref;
pub mod load;
pub mod model;
pub mod regions;
pub mod secret;
pub mod yaml;

use std::path::Path;

pub use de::Spanned;
pub use diagnostic::{Diagnostic, PlanErrors, Span};
pub use key_ref::KeyRef;
pub use model::*;
pub use secret::Secret;

/// Load and check a plan from text; `path` is only used to name the file in errors.
pub fn from_text(path: &str, text: &str) -> Result<Plan, PlanErrors> {
    let decoded = load::decode(text);
    let mut diagnostics = decoded.diagnostics;
    if let Some(plan) = &decoded.plan {
        diagnostics.extend(check::check(plan, &decoded.broken));
    }
    diagnostics.sort_by_key(|d| d.span.offset);
    match decoded.plan {
        Some(plan) if diagnostics.is_empty() => Ok(plan),
        _ => Err(PlanErrors {
            path: path.to_string(),
            // The lines shown under a problem never show a secret.
            source: secret::mask(text),
            diagnostics,
        }),
    }
}

/// Load and check the plan file at `path`.
pub fn load(path: &Path) -> Result<Plan, PlanErrors> {
    let shown = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return Err(PlanErrors::unreadable(shown, &e)),
    };
    match String::from_utf8(bytes) {
        Ok(text) => from_text(&shown, &text),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let text = secret::mask(&String::from_utf8_lossy(e.as_bytes()));
            let span = Span::point(&text, at.min(text.len()));
            Err(PlanErrors {
                path: shown,
                source: text,
                diagnostics: vec![
                    Diagnostic::new("the plan is not UTF-8 text (is this a binary file?)").at(span),
                ],
            })
        }
    }
}

/// The JSON Schema of the plan format, derived from the same types the loader uses.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Plan);
    serde_json::to_value(&schema).expect("a schema is plain JSON")
}
