//! Peer-chosen strings as a log line may hold them.
//!
//! A function or worker name, a token name, a path: whatever a peer chose reaches log lines
//! (and span fields, which reach the lines of the events inside the span). [`Escaped`]
//! writes control characters (a newline that would forge a line of its own, ESC that would
//! repaint a terminal) and backslashes escaped, invalid UTF-8 as `\xNN`. It lives here, at
//! the bottom, because the trace helpers name spans after the function called; the
//! dispatcher's `logging` module re-exports it.
//!
//! # Examples
//!
//! ```
//! use nmid_proto::escape::Escaped;
//!
//! assert_eq!(Escaped(b"a\nb\xff").to_string(), "a\\nb\\xff");
//! assert_eq!(Escaped::from("ToUpper").to_string(), "ToUpper");
//! ```

use std::fmt::{self, Write as _};

/// Peer-chosen bytes as a log line may hold them (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a [u8]);

impl<'a> From<&'a str> for Escaped<'a> {
    fn from(text: &'a str) -> Self {
        Self(text.as_bytes())
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    c if c.is_control() => write!(f, "{}", c.escape_default())?,
                    c => f.write_char(c)?,
                }
            }
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Control characters, backslashes and invalid UTF-8 are escaped; the rest stays.
    #[test]
    fn peer_strings_are_escaped() {
        let shown = Escaped(b"a\nb\x1b[31mred\\ \xff ok \xc3\xa9").to_string();
        assert_eq!(shown, "a\\nb\\u{1b}[31mred\\\\ \\xff ok \u{e9}");
        assert!(!shown.contains('\n') && !shown.contains('\x1b'));
        assert_eq!(Escaped::from("ToUpper").to_string(), "ToUpper");
    }
}
