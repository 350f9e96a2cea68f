//! User-facing diagnostics: a message, a primary span with a label, an optional help line.
//! Rendered rustc-style by miette (`file:line:col`, the source line, a caret under the span).

use miette::{GraphicalReportHandler, GraphicalTheme, NamedSource, SourceSpan};

/// A byte range of the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub len: usize,
}

impl Span {
    pub fn new(start: usize, len: usize) -> Span {
        Span { start, len }
    }
    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        let start = self.start.min(other.start);
        let end = (self.start + self.len).max(other.start + other.len);
        Span::new(start, end - start)
    }
}

/// One error in DSL source.
#[derive(Clone, Debug, PartialEq)]
pub struct Diag {
    pub message: String,
    pub span: Span,
    pub label: Option<String>,
    pub help: Option<String>,
}

impl Diag {
    pub fn new(message: impl Into<String>, span: Span) -> Diag {
        Diag { message: message.into(), span, label: None, help: None }
    }
    pub fn label(mut self, l: impl Into<String>) -> Diag {
        self.label = Some(l.into());
        self
    }
    pub fn help(mut self, h: impl Into<String>) -> Diag {
        self.help = Some(h.into());
        self
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
struct Report {
    message: String,
    #[source_code]
    src: NamedSource<String>,
    #[label("{label}")]
    span: SourceSpan,
    label: String,
    #[help]
    help: Option<String>,
}

/// 1-based line and column of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|p| offset - p).unwrap_or(offset + 1);
    (line, col)
}

/// Render one diagnostic: first an `error: path:line:col: message` line (easy to grep and to
/// click in editors), then miette's source snippet with the caret and help.
pub fn render(path: &str, src: &str, d: &Diag) -> String {
    let (line, col) = line_col(src, d.span.start);
    let mut text = src.to_string();
    if d.span.start >= src.len() {
        // miette draws no label at the very end of the source: give the caret a column to sit on.
        text.push(' ');
    }
    let report = Report {
        message: d.message.clone(),
        src: NamedSource::new(path, text),
        span: SourceSpan::new(d.span.start.min(src.len()).into(), d.span.len),
        label: d.label.clone().unwrap_or_else(|| "here".to_string()),
        help: d.help.clone(),
    };
    let mut out = format!("error: {path}:{line}:{col}: {}\n", d.message);
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(100);
    let _ = handler.render_report(&mut out, &report);
    out
}
