//! The plan file: loading with spans, checks, diagnostics.
