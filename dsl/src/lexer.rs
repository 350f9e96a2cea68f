//! Tokens of the DSL. Keywords are identifiers; the parser gives them meaning by position.

use crate::diag::{Diag, Span};

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    Int(i64),
    Float(f64),
    /// Punctuation and operators, e.g. `(`, `..`, `<=`, `&&`.
    Punct(&'static str),
    Eof,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// Longest first, so `..` wins over `.`, `<=` over `<`.
const PUNCTS: &[&str] = &[
    "..", "==", "!=", "<=", ">=", "&&", "||", "<<", ">>", "(", ")", "[", "]", "{", "}", "<", ">", ",", ":", ";", "=", "+",
    "-", "*", "/", "%", "&", "|", "^", "!", ".",
];

pub fn lex(src: &str) -> Result<Vec<Token>, Diag> {
    let bytes = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            let start = i;
            i += 2;
            while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                i += 1;
            }
            if i + 1 >= bytes.len() {
                return Err(Diag::new("unterminated block comment", Span::new(start, 2))
                    .label("comment opened here")
                    .help("close it with `*/`"));
            }
            i += 2;
            continue;
        }
        let start = i;
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push(Token { tok: Tok::Ident(src[start..i].to_string()), span: Span::new(start, i - start) });
            continue;
        }
        if c.is_ascii_digit() {
            out.push(lex_number(src, &mut i)?);
            continue;
        }
        if let Some(p) = PUNCTS.iter().find(|p| src[i..].starts_with(**p)) {
            i += p.len();
            out.push(Token { tok: Tok::Punct(p), span: Span::new(start, p.len()) });
            continue;
        }
        let ch = src[i..].chars().next().unwrap_or('?');
        return Err(Diag::new(format!("unexpected character `{ch}`"), Span::new(start, ch.len_utf8()))
            .label("not part of the language")
            .help("opc source uses ASCII identifiers, numbers and operators like `+ - * / %`"));
    }
    out.push(Token { tok: Tok::Eof, span: Span::new(src.len(), 0) });
    Ok(out)
}

fn lex_number(src: &str, i: &mut usize) -> Result<Token, Diag> {
    let bytes = src.as_bytes();
    let start = *i;
    if bytes[*i] == b'0' && matches!(bytes.get(*i + 1), Some(b'x') | Some(b'X')) {
        *i += 2;
        while *i < bytes.len() && (bytes[*i].is_ascii_hexdigit() || bytes[*i] == b'_') {
            *i += 1;
        }
        let text: String = src[start + 2..*i].chars().filter(|c| *c != '_').collect();
        let span = Span::new(start, *i - start);
        return i64::from_str_radix(&text, 16)
            .map(|v| Token { tok: Tok::Int(v), span })
            .map_err(|_| Diag::new("invalid hexadecimal literal", span).help("e.g. `0xF0`"));
    }
    let mut is_float = false;
    while *i < bytes.len() && (bytes[*i].is_ascii_digit() || bytes[*i] == b'_') {
        *i += 1;
    }
    // `1.5` is a float, `0..n` is a range.
    if *i + 1 < bytes.len() && bytes[*i] == b'.' && bytes[*i + 1].is_ascii_digit() {
        is_float = true;
        *i += 1;
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            *i += 1;
        }
    }
    if *i < bytes.len() && (bytes[*i] == b'e' || bytes[*i] == b'E') {
        let save = *i;
        *i += 1;
        if *i < bytes.len() && (bytes[*i] == b'+' || bytes[*i] == b'-') {
            *i += 1;
        }
        if *i < bytes.len() && bytes[*i].is_ascii_digit() {
            is_float = true;
            while *i < bytes.len() && bytes[*i].is_ascii_digit() {
                *i += 1;
            }
        } else {
            *i = save;
        }
    }
    let span = Span::new(start, *i - start);
    let text: String = src[start..*i].chars().filter(|c| *c != '_').collect();
    if is_float {
        text.parse::<f64>()
            .map(|v| Token { tok: Tok::Float(v), span })
            .map_err(|_| Diag::new("invalid float literal", span))
    } else {
        text.parse::<i64>().map(|v| Token { tok: Tok::Int(v), span }).map_err(|_| {
            Diag::new("integer literal out of range", span).help("integer literals must fit in 64 bits")
        })
    }
}
