//! Percent-encoding as AWS's REST and query APIs use it (RFC 3986): one encoder and one
//! decoder for every place that builds or reads such text.

/// Percent-encodes `s`, keeping RFC 3986's unreserved characters (and `/` with `keep_slash`,
/// for an S3 key in a path or in `x-amz-copy-source`).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `%XX` escapes and `+` (a space, in form and query encoding); a `%` not followed by
/// two hex digits stays as it is.
pub fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes_as_aws_does() {
        assert_eq!(uri_encode("a/b c+d.txt", true), "a/b%20c%2Bd.txt");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(uri_encode("é", false), "%C3%A9");
        assert_eq!(form_decode("dir%2Fa%20b+c.txt"), "dir/a b c.txt");
        assert_eq!(form_decode("x%2"), "x%2");
        assert_eq!(form_decode("%41"), "A");
    }
}
