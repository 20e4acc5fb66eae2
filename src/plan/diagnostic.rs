//! Plan errors that point at the user's file: `file:line:column`, the line, a caret, a hint.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use serde::Serialize;

/// A place in the plan file. Lines and columns are 1-based; columns count characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
    pub line: usize,
    pub column: usize,
}

impl Span {
    pub fn start() -> Span {
        Span {
            offset: 0,
            len: 0,
            line: 1,
            column: 1,
        }
    }

    /// The span of one byte position in `text`.
    pub fn point(text: &str, offset: usize) -> Span {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = text[line_start..offset].chars().count() + 1;
        Span {
            offset,
            len: 0,
            line,
            column,
        }
    }

    /// The span at a 1-based line and character column of `text` (clamped to the text).
    pub fn from_line_col(text: &str, line: usize, column: usize) -> Span {
        let mut offset = 0;
        for (i, l) in text.split_inclusive('\n').enumerate() {
            if i + 1 == line {
                let within: usize = l
                    .chars()
                    .take(column.saturating_sub(1))
                    .map(char::len_utf8)
                    .sum();
                return Span::point(text, offset + within);
            }
            offset += l.len();
        }
        Span::point(text, text.len())
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem found in a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub message: String,
    pub span: Span,
    /// What the caret under the span says; defaults to a short form of the message.
    pub label: Option<String>,
    pub help: Option<String>,
    /// Other places that explain this one (the first definition of a duplicate, a cycle's edges).
    pub related: Vec<(Span, String)>,
    /// About the file as a whole (missing, a directory, unreadable): one line, no snippet.
    #[serde(skip)]
    pub whole_file: bool,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            span: Span::start(),
            label: None,
            help: None,
            related: Vec::new(),
            whole_file: false,
        }
    }
    pub fn at(mut self, span: Span) -> Self {
        self.span = span;
        self
    }
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    pub fn related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }
}

/// Every problem found in one plan file, with the text needed to show them.
#[derive(Debug, Clone)]
pub struct PlanErrors {
    pub path: String,
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl std::error::Error for PlanErrors {}

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            if d.whole_file {
                writeln!(f, "{}", d.message)?;
            } else {
                writeln!(f, "{}:{}: {}", self.path, d.span, d.message)?;
            }
        }
        Ok(())
    }
}

impl PlanErrors {
    /// The plan file could not be read: what is wrong with the path, and what to do.
    pub fn unreadable(path: String, e: &std::io::Error) -> PlanErrors {
        use std::io::ErrorKind;
        let why = match e.kind() {
            ErrorKind::NotFound => "no such file; check the path".to_string(),
            ErrorKind::IsADirectory => {
                "it is a directory; name the plan's YAML file in it (e.g. plan.yaml)".to_string()
            }
            ErrorKind::PermissionDenied => {
                "permission denied; check the file's permissions".to_string()
            }
            _ => e.to_string(),
        };
        let mut d = Diagnostic::new(format!("cannot read the plan {path}: {why}"));
        d.whole_file = true;
        PlanErrors {
            path,
            source: String::new(),
            diagnostics: vec![d],
        }
    }

    /// The full report: each problem with its line and caret, then a count.
    pub fn render(&self) -> String {
        let handler =
            GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(100);
        let mut out = String::new();
        if self.diagnostics.iter().all(|d| d.whole_file) {
            for d in &self.diagnostics {
                out.push_str(&format!("error: {}\n", d.message));
            }
            return out;
        }
        for d in &self.diagnostics {
            if d.whole_file {
                out.push_str(&format!("error: {}\n", d.message));
                continue;
            }
            let shown = Shown {
                d,
                source: NamedSource::new(self.path.clone(), self.source.clone()),
            };
            out.push_str(&format!("error: {}:{}: {}\n", self.path, d.span, d.message));
            let mut report = String::new();
            let _ = handler.render_report(&mut report, &shown);
            // The headline above already says what is wrong; keep only miette's snippet and help.
            let snippet = report
                .lines()
                .skip_while(|l| !l.contains("╭─["))
                .collect::<Vec<_>>();
            if snippet.is_empty() {
                out.push_str(&report);
            } else {
                for line in snippet {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        let n = self.diagnostics.len();
        out.push_str(&format!(
            "{} problem{} in {}\n",
            n,
            if n == 1 { "" } else { "s" },
            self.path
        ));
        out
    }
}

struct Shown<'a> {
    d: &'a Diagnostic,
    source: NamedSource<String>,
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}
impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}
impl std::error::Error for Shown<'_> {}

impl miette::Diagnostic for Shown<'_> {
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.d
            .help
            .as_ref()
            .map(|h| Box::new(h.clone()) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let label = self.d.label.clone().unwrap_or_else(|| "here".to_string());
        let mut labels = vec![LabeledSpan::new_primary_with_span(
            Some(label),
            SourceSpan::new(self.d.span.offset.into(), self.d.span.len),
        )];
        for (span, text) in &self.d.related {
            labels.push(LabeledSpan::new_with_span(
                Some(text.clone()),
                SourceSpan::new(span.offset.into(), span.len),
            ));
        }
        Some(Box::new(labels.into_iter()))
    }
}
