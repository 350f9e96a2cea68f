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

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
struct NotesReport {
    message: String,
    #[source_code]
    src: NamedSource<String>,
    #[label(collection)]
    labels: Vec<miette::LabeledSpan>,
    #[help]
    help: Option<String>,
}

/// Byte span of the token at 1-based `line:col` (an identifier or number there, else one byte).
fn span_at(src: &str, line: u32, col: u32) -> Option<Span> {
    let start = src.split_inclusive('\n').take(line.checked_sub(1)? as usize).map(str::len).sum::<usize>() + col.checked_sub(1)? as usize;
    if start >= src.len() || src[..start].matches('\n').count() + 1 != line as usize {
        return None;
    }
    let len = src[start..].bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count().max(1);
    Some(Span::new(start, len))
}

/// Render an error found after lowering (a backend's budget check, ...) at DSL locations:
/// `error: path:line:col: message` at the first note, then a snippet with a caret and label per
/// note (`(line, col, label)`, 1-based, as `opc_ir::Loc`). Notes more than a few lines apart get
/// snippets of their own, each headed `note: path:line:col: label`. Notes outside the source are
/// dropped; with none left the message is returned as `error: path: message`.
pub fn render_notes(path: &str, src: &str, message: &str, notes: &[(u32, u32, String)], help: Option<&str>) -> String {
    let spans: Vec<(Span, &str)> = notes.iter().filter_map(|(l, c, label)| span_at(src, *l, *c).map(|s| (s, label.as_str()))).collect();
    if spans.is_empty() {
        let help = help.map(|h| format!("\n  help: {h}")).unwrap_or_default();
        return format!("error: {path}: {message}{help}\n");
    }
    // Group consecutive notes whose lines are close, so one snippet does not span the file.
    let mut groups: Vec<Vec<(Span, &str)>> = vec![];
    for sp in spans {
        let near = groups.last().and_then(|g| g.last()).is_some_and(|(p, _)| line_col(src, sp.0.start).0.abs_diff(line_col(src, p.start).0) <= 3);
        match groups.last_mut() {
            Some(g) if near => g.push(sp),
            _ => groups.push(vec![sp]),
        }
    }
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(100);
    let mut out = String::new();
    for (i, g) in groups.iter().enumerate() {
        let (line, col) = line_col(src, g[0].0.start);
        let head = if i == 0 { message.to_string() } else { g[0].1.to_string() };
        out += &format!("{}: {path}:{line}:{col}: {head}\n", if i == 0 { "error" } else { "note" });
        let report = NotesReport {
            message: head,
            src: NamedSource::new(path, src.to_string()),
            labels: g.iter().map(|(s, l)| miette::LabeledSpan::at(SourceSpan::new(s.start.into(), s.len), *l)).collect(),
            help: if i + 1 == groups.len() { help.map(str::to_string) } else { None },
        };
        let _ = handler.render_report(&mut out, &report);
    }
    out
}
