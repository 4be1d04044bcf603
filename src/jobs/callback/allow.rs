//! Where a callback may go: the prefixes of `jobs.callback_allow` and the check of a
//! callback URL against them. Plain functions over parsed URLs, nothing else: config
//! loading parses the list with [`AllowedPrefix::parse`], submission checks a URL with
//! [`check`].
//!
//! Everything is compared on the URL as the HTTP client will use it (WHATWG parsing, as
//! `reqwest` does): the scheme, the host (lower-cased, IDNA, IPv4 spellings such as
//! `2130706433` or `0x7f.1` made dotted) and the port exactly, the path at a segment
//! boundary after dot segments are resolved. A string prefix would let
//! `http://allowed.example@evil/` (userinfo), `http://allowed.example.evil/` (host
//! suffix) or `/hooks/%2e%2e/admin` through; here the first is refused outright, the second
//! has another host, and encoded separators in the path are refused.
//!
//! A receiver may read the path differently from the URL parser: Tomcat and Spring drop a
//! `;...` path parameter (`/hooks/..;/admin` is `/hooks/../admin` to them), and a receiver
//! that decodes twice reads `%252e%252e` as `..`; others fold overlong UTF-8 (`%c0%ae`),
//! full-width dots or IIS's `%u002e` into `.`. So a `;` anywhere in the path, encoded or
//! not, any encoded percent (`%25`), any escape of a non-ASCII byte or not of two hex
//! digits, and any segment that is `.` or `..` once decoded are refused too.

use reqwest::Url;

/// Longest callback URL accepted, in bytes (as given, and as parsed).
pub const MAX_URL_BYTES: usize = 2048;

/// Why a callback URL (or an allow-list entry) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    /// Over [`MAX_URL_BYTES`].
    #[error("longer than {MAX_URL_BYTES} bytes")]
    TooLong,
    /// Not an absolute URL.
    #[error("not a URL ({0})")]
    Unparsable(String),
    /// A scheme other than http(s).
    #[error("scheme {0:?}: callbacks are sent over http only")]
    Scheme(String),
    /// https: this build's HTTP client has no TLS.
    #[error(
        "https is not supported: this build's HTTP client has no TLS (use http to a receiver \
         on a trusted network, or a TLS-terminating proxy beside it)"
    )]
    Https,
    /// A user name or password (`http://user:pass@host/`).
    #[error("a user name or password in the URL")]
    Userinfo,
    /// A fragment (`#...`), which is never sent and so can only mislead.
    #[error("a fragment (#...) in the URL")]
    Fragment,
    /// A query in an allow-list entry (prefixes are scheme, host, port and path).
    #[error("a query (?...) in an allow-list entry")]
    Query,
    /// No host.
    #[error("no host")]
    NoHost,
    /// A percent-encoded `/`, `\`, `.` or NUL in the path.
    #[error("a percent-encoded '/', '\\', '.' or NUL in the path")]
    EncodedSeparator,
    /// A `;` in the path: Tomcat- and Spring-style receivers cut a segment at `;` (a path
    /// parameter), so `/hooks/..;/admin` climbs out of `/hooks/` there.
    #[error(
        "a ';' in the path (some receivers drop ';...' from a segment, so '..;' reads as '..')"
    )]
    Semicolon,
    /// `%25` (an encoded `%`) in the path: a receiver that decodes twice reads `%252e` as `.`.
    #[error("an encoded '%' (%25) in the path (a receiver decoding twice could read '..' in it)")]
    EncodedPercent,
    /// A percent-escape in the path of a byte of 0x80 or more (overlong or full-width
    /// spellings of `.` and `/`), or one that is not `%` and two hex digits.
    #[error("a percent-encoded non-ASCII byte or a malformed '%' escape in the path (some receivers decode them to '.' or '/')")]
    EncodedOther,
    /// A path segment that is `.` or `..` once percent-decoded.
    #[error("a path segment that is '.' or '..' once decoded")]
    DotSegment,
    /// Under no prefix of the allow list (or the list is empty).
    #[error("not under any prefix of jobs.callback_allow")]
    NotAllowed,
}

/// One entry of `jobs.callback_allow`: the scheme, host and port a callback must have, and
/// the path it must be at or under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedPrefix {
    scheme: String,
    host: String,
    port: u16,
    path: String,
}

impl AllowedPrefix {
    /// Parses an allow-list entry, with the checks of a callback URL and no query.
    pub fn parse(entry: &str) -> Result<Self, UrlRefusal> {
        let url = parse_http(entry)?;
        if url.query().is_some() {
            return Err(UrlRefusal::Query);
        }
        Ok(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str().unwrap_or_default().to_owned(),
            port: url.port_or_known_default().unwrap_or_default(),
            path: url.path().to_owned(),
        })
    }

    /// Whether `url` (parsed by [`parse_http`]) falls under this prefix.
    pub fn covers(&self, url: &Url) -> bool {
        url.scheme() == self.scheme
            && url.host_str() == Some(self.host.as_str())
            && url.port_or_known_default() == Some(self.port)
            && under_path(url.path(), &self.path)
    }
}

/// Checks a callback URL: a valid http URL under one of `allow`'s prefixes.
pub fn check(raw: &str, allow: &[AllowedPrefix]) -> Result<Url, UrlRefusal> {
    let url = parse_http(raw)?;
    match allow.iter().any(|prefix| prefix.covers(&url)) {
        true => Ok(url),
        false => Err(UrlRefusal::NotAllowed),
    }
}

/// Parses `raw` as an http URL with a host, no userinfo, no fragment, no encoded
/// separators in its path, at most [`MAX_URL_BYTES`] long before and after parsing.
pub fn parse_http(raw: &str) -> Result<Url, UrlRefusal> {
    if raw.len() > MAX_URL_BYTES {
        return Err(UrlRefusal::TooLong);
    }
    let url = Url::parse(raw).map_err(|e| UrlRefusal::Unparsable(e.to_string()))?;
    match url.scheme() {
        "http" => {}
        "https" => return Err(UrlRefusal::Https),
        other => return Err(UrlRefusal::Scheme(other.to_owned())),
    }
    if url.as_str().len() > MAX_URL_BYTES {
        return Err(UrlRefusal::TooLong);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefusal::Userinfo);
    }
    if url.fragment().is_some() {
        return Err(UrlRefusal::Fragment);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlRefusal::NoHost);
    }
    let path = url.path().to_ascii_lowercase();
    if path.contains(';') {
        return Err(UrlRefusal::Semicolon);
    }
    if path.contains("%25") {
        return Err(UrlRefusal::EncodedPercent);
    }
    if path.split('/').any(is_dot_segment) {
        return Err(UrlRefusal::DotSegment);
    }
    escapes_allowed(&path)?;
    Ok(url)
}

/// Every percent-escape of `path` (lower-cased) is of a plain ASCII byte no receiver turns
/// into a separator: not `/`, `\`, `.`, NUL (refused as [`UrlRefusal::EncodedSeparator`]),
/// not `;` ([`UrlRefusal::Semicolon`]), not a byte of 0x80 or more (overlong UTF-8 `%c0%ae`,
/// full-width `．` as `%ef%bc%8e`: decoders that fold them read `.`), and well formed (not
/// IIS's `%u002e`): [`UrlRefusal::EncodedOther`].
fn escapes_allowed(path: &str) -> Result<(), UrlRefusal> {
    let bytes = path.as_bytes();
    let mut at = 0;
    while let Some(offset) = bytes[at..].iter().position(|&b| b == b'%') {
        let escape = at + offset;
        let hex = bytes
            .get(escape + 1..escape + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
        match byte {
            Some(b'/' | b'\\' | b'.' | 0) => return Err(UrlRefusal::EncodedSeparator),
            Some(b';') => return Err(UrlRefusal::Semicolon),
            Some(b) if b < 0x80 => at = escape + 3,
            _ => return Err(UrlRefusal::EncodedOther),
        }
    }
    Ok(())
}

/// `segment` (lower-cased) is `.` or `..` once percent-decoded, or once a receiver that
/// trims whitespace (IIS and others do) has trimmed it: only `%2e` decodes to a dot, so
/// replacing it, and dropping encoded whitespace, is decoding as far as this question goes.
fn is_dot_segment(segment: &str) -> bool {
    let mut decoded = segment.replace("%2e", ".");
    for space in ["%20", "%09", "%0a", "%0b", "%0c", "%0d"] {
        decoded = decoded.replace(space, "");
    }
    let decoded = decoded.trim();
    decoded == "." || decoded == ".."
}

/// `path` is `prefix` or below it at a segment boundary: `/hooks` covers `/hooks` and
/// `/hooks/a`, never `/hooksX`; `/hooks/` covers `/hooks/` and `/hooks/a`, not `/hooks`.
fn under_path(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(entries: &[&str]) -> Vec<AllowedPrefix> {
        (entries.iter())
            .map(|e| AllowedPrefix::parse(e).expect(e))
            .collect()
    }

    fn verdict(url: &str, entries: &[&str]) -> Result<String, UrlRefusal> {
        check(url, &allow(entries)).map(|u| u.to_string())
    }

    const HOOKS: &[&str] = &["http://allowed.example:9000/hooks/"];

    /// URLs under a prefix are allowed, as parsed.
    #[test]
    fn urls_under_a_prefix_are_allowed() {
        for url in [
            "http://allowed.example:9000/hooks/",
            "http://allowed.example:9000/hooks/a",
            "http://allowed.example:9000/hooks/a/b?job=1",
            "HTTP://ALLOWED.example:9000/hooks/x",
            "http://allowed.example:9000/hooks/a/../b",
        ] {
            assert!(verdict(url, HOOKS).is_ok(), "{url}");
        }
        let ip = &["http://127.0.0.1:9000/hooks"];
        for url in [
            "http://127.0.0.1:9000/hooks",
            "http://127.0.0.1:9000/hooks/x",
            "http://2130706433:9000/hooks/x",
            "http://0x7f.1:9000/hooks/x",
        ] {
            assert!(verdict(url, ip).is_ok(), "{url}");
        }
        let default_port = &["http://h.example/"];
        assert!(verdict("http://h.example:80/any", default_port).is_ok());
    }

    /// Outside every prefix is refused: another host, port, path or scheme.
    #[test]
    fn urls_outside_the_list_are_refused() {
        for url in [
            "http://other.example:9000/hooks/a",
            "http://allowed.example:9001/hooks/a",
            "http://allowed.example/hooks/a",
            "http://allowed.example:9000/other/a",
            "http://allowed.example:9000/",
            "http://allowed.example:9000/hooks",
            "http://allowed.example:9000/hooks/../admin",
            "http://allowed.example:9000/hooks/..%2F../admin",
        ] {
            assert!(verdict(url, HOOKS).is_err(), "{url}");
        }
    }

    /// Userinfo cannot dress another host up as the allowed one.
    #[test]
    fn the_userinfo_trick_is_refused() {
        for url in [
            "http://allowed.example:9000@evil.example/hooks/a",
            "http://allowed.example:9000/hooks/@evil.example/",
            "http://user:pass@allowed.example:9000/hooks/a",
            "http://user@allowed.example:9000/hooks/a",
        ] {
            let got = verdict(url, HOOKS);
            if url.contains("/hooks/@") {
                // The '@' is in the path here: the host is the allowed one.
                assert!(got.is_ok(), "{url}: {got:?}");
            } else {
                assert_eq!(got, Err(UrlRefusal::Userinfo), "{url}");
            }
        }
    }

    /// A host that merely starts with the allowed name is another host.
    #[test]
    fn the_host_suffix_trick_is_refused() {
        for url in [
            "http://allowed.example.evil:9000/hooks/a",
            "http://allowed.exampleevil:9000/hooks/a",
            "http://allowed.example%2eevil:9000/hooks/a",
            "http://allowed.example.:9000/hooks/a",
        ] {
            let got = verdict(url, HOOKS);
            assert!(got.is_err(), "{url}: {got:?}");
        }
    }

    /// The port must match exactly, a default port included.
    #[test]
    fn a_port_mismatch_is_refused() {
        let entries = &["http://127.0.0.1:9000/"];
        assert!(verdict("http://127.0.0.1:9000/x", entries).is_ok());
        assert_eq!(
            verdict("http://127.0.0.1:9001/x", entries),
            Err(UrlRefusal::NotAllowed)
        );
        assert_eq!(
            verdict("http://127.0.0.1/x", entries),
            Err(UrlRefusal::NotAllowed)
        );
    }

    /// A prefix ends at a segment boundary: `/hooks` does not cover `/hooksX`.
    #[test]
    fn the_path_prefix_stops_at_a_segment_boundary() {
        let entries = &["http://h.example/hooks"];
        assert!(verdict("http://h.example/hooks", entries).is_ok());
        assert!(verdict("http://h.example/hooks/", entries).is_ok());
        assert!(verdict("http://h.example/hooks/x", entries).is_ok());
        for url in ["http://h.example/hooksX", "http://h.example/hook"] {
            assert_eq!(verdict(url, entries), Err(UrlRefusal::NotAllowed), "{url}");
        }
        assert!(under_path("/hooks/x", "/hooks/"));
        assert!(!under_path("/hooks", "/hooks/"));
    }

    /// Percent-encoded separators and dots are refused; encoded hosts are decoded before
    /// the comparison.
    #[test]
    fn percent_encoding_cannot_escape_the_prefix() {
        for url in [
            "http://allowed.example:9000/hooks/%2e%2e/admin",
            "http://allowed.example:9000/hooks/..%2fadmin",
            "http://allowed.example:9000/hooks/a%2Fb",
            "http://allowed.example:9000/hooks/a%5cb",
            "http://allowed.example:9000/hooks/a%00",
            "http://allowed.example:9000/hooks/x/%2E%2E/%2e%2e/admin",
        ] {
            let got = verdict(url, HOOKS);
            assert!(
                matches!(
                    got,
                    Err(UrlRefusal::EncodedSeparator) | Err(UrlRefusal::NotAllowed)
                ),
                "{url}: {got:?}"
            );
        }
        // An encoded dot segment is resolved by the parser, as the client will send it.
        let got = verdict("http://allowed.example:9000/hooks/a/%2E%2E/b", HOOKS);
        assert_eq!(got.as_deref(), Ok("http://allowed.example:9000/hooks/b"));
        // An encoded host is the decoded host: allowed when that is the allowed one.
        let got = verdict("http://allowed%2Eexample:9000/hooks/a", HOOKS);
        assert!(got.is_ok(), "{got:?}");
        // Other encoded bytes in the path are fine.
        assert!(verdict("http://allowed.example:9000/hooks/a%20b", HOOKS).is_ok());
    }

    /// `..;` (a path parameter Tomcat and Spring drop) is refused, and so is any `;` in the
    /// path; a `;` in the query is the receiver's business.
    #[test]
    fn a_semicolon_in_the_path_is_refused() {
        for url in [
            "http://allowed.example:9000/hooks/..;/admin",
            "http://allowed.example:9000/hooks/x/..;/..;/admin",
            "http://allowed.example:9000/hooks/a;jsessionid=1",
            "http://allowed.example:9000/hooks/;",
            "http://allowed.example:9000/hooks/..%3b/admin",
            "http://allowed.example:9000/hooks/..%3B/admin",
        ] {
            assert_eq!(verdict(url, HOOKS), Err(UrlRefusal::Semicolon), "{url}");
        }
        assert!(verdict("http://allowed.example:9000/hooks/a?x=1;y=2", HOOKS).is_ok());
        let err = UrlRefusal::Semicolon.to_string();
        assert!(err.contains("';'") && err.contains("'..;'"), "{err}");
    }

    /// Escapes other decoders fold into `.` or `/` are refused: overlong UTF-8, full-width
    /// dots (the parser encodes them as UTF-8 bytes), IIS's `%u`, a `%` without two hex
    /// digits; an escape of plain ASCII is not.
    #[test]
    fn escapes_of_non_ascii_bytes_and_malformed_escapes_are_refused() {
        for url in [
            "http://allowed.example:9000/hooks/%c0%ae%c0%ae/admin",
            "http://allowed.example:9000/hooks/%C0%AF",
            "http://allowed.example:9000/hooks/%u002e%u002e/admin",
            "http://allowed.example:9000/hooks/\u{ff0e}\u{ff0e}/admin",
            "http://allowed.example:9000/hooks/a%",
            "http://allowed.example:9000/hooks/a%2",
            "http://allowed.example:9000/hooks/caf%C3%A9",
        ] {
            assert_eq!(verdict(url, HOOKS), Err(UrlRefusal::EncodedOther), "{url}");
        }
        let got = verdict("http://allowed.example:9000/hooks/a%41%7e", HOOKS);
        assert!(got.is_ok(), "{got:?}");
    }

    /// An encoded percent in the path is refused in any letter case, whatever follows it
    /// (`%252e%252e` is `..` to a receiver that decodes twice).
    #[test]
    fn an_encoded_percent_in_the_path_is_refused() {
        for url in [
            "http://allowed.example:9000/hooks/%252e%252e/admin",
            "http://allowed.example:9000/hooks/%252E%252E/admin",
            "http://allowed.example:9000/hooks/a%252fb",
            "http://allowed.example:9000/hooks/100%25",
        ] {
            assert_eq!(
                verdict(url, HOOKS),
                Err(UrlRefusal::EncodedPercent),
                "{url}"
            );
        }
        assert!(UrlRefusal::EncodedPercent.to_string().contains("%25"));
        assert!(verdict("http://allowed.example:9000/hooks/a?p=%25", HOOKS).is_ok());
    }

    /// A segment that decodes once to `.` or `..` is refused, whatever the spelling; the
    /// parser resolves most of them first, so the check is on the segments themselves.
    #[test]
    fn a_segment_that_decodes_to_a_dot_segment_is_refused() {
        for segment in [".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2E."] {
            assert!(is_dot_segment(&segment.to_ascii_lowercase()), "{segment}");
        }
        for segment in ["..%20", "%20..", "..%09", ".%0d%0a", "%2e%2e%20"] {
            assert!(is_dot_segment(segment), "{segment}");
        }
        for segment in ["", "a", "...", "..a", "%2e%2e%2e", "%252e", "a%20b"] {
            assert!(!is_dot_segment(segment), "{segment}");
        }
        // Spelled in a URL, each is resolved by the parser (then compared as resolved) or
        // refused: never let through with a dot segment left in the path that is sent.
        for url in [
            "http://allowed.example:9000/hooks/.%2e/admin",
            "http://allowed.example:9000/hooks/%2e./admin",
            "http://allowed.example:9000/hooks/%2E/admin",
            "http://allowed.example:9000/hooks/%2e%2E",
        ] {
            if let Ok(sent) = verdict(url, HOOKS) {
                let path = Url::parse(&sent).unwrap().path().to_ascii_lowercase();
                assert!(!path.split('/').any(is_dot_segment), "{url}: {sent}");
            }
        }
        assert!(UrlRefusal::DotSegment.to_string().contains("'..'"));
    }

    /// Only http: https is refused with its own reason, other schemes too.
    #[test]
    fn non_http_schemes_are_refused() {
        assert_eq!(
            verdict("https://allowed.example:9000/hooks/a", HOOKS),
            Err(UrlRefusal::Https)
        );
        for url in [
            "ftp://allowed.example:9000/hooks/a",
            "file:///etc/passwd",
            "gopher://allowed.example:9000/hooks/a",
            "unix:/var/run/x.sock",
        ] {
            assert!(
                matches!(verdict(url, HOOKS), Err(UrlRefusal::Scheme(_))),
                "{url}"
            );
        }
        assert!(matches!(
            verdict("/hooks/a", HOOKS),
            Err(UrlRefusal::Unparsable(_))
        ));
    }

    /// A URL over 2048 bytes is refused, even under a prefix.
    #[test]
    fn a_too_long_url_is_refused() {
        let base = "http://allowed.example:9000/hooks/";
        let fits = format!("{base}{}", "a".repeat(MAX_URL_BYTES - base.len()));
        assert!(verdict(&fits, HOOKS).is_ok());
        let over = format!("{fits}a");
        assert_eq!(verdict(&over, HOOKS), Err(UrlRefusal::TooLong));
        // Short as given, longer once parsed (spaces are encoded): still refused.
        let spaces = format!("{base}a{}b", " ".repeat(1000));
        assert!(spaces.len() < MAX_URL_BYTES);
        assert_eq!(verdict(&spaces, HOOKS), Err(UrlRefusal::TooLong));
    }

    /// An empty list refuses every URL.
    #[test]
    fn an_empty_list_refuses_all() {
        for url in ["http://127.0.0.1:9000/hooks/", "http://localhost/"] {
            assert_eq!(verdict(url, &[]), Err(UrlRefusal::NotAllowed), "{url}");
        }
    }

    /// Fragments are refused in URLs and entries; queries in entries only.
    #[test]
    fn fragments_and_entry_queries_are_refused() {
        assert_eq!(
            verdict("http://allowed.example:9000/hooks/a#x", HOOKS),
            Err(UrlRefusal::Fragment)
        );
        assert_eq!(
            AllowedPrefix::parse("http://h.example/x?a=1"),
            Err(UrlRefusal::Query)
        );
    }
}
