//! Credentials kept out of captures: the values of HTTP headers that carry
//! them are overwritten in recorded socket payloads before they are written,
//! unless `--payload-raw` asks for the bytes as they were.

/// Headers whose values are credentials (compared without case).
const CREDENTIAL_HEADERS: [&[u8]; 5] =
    [b"authorization", b"proxy-authorization", b"cookie", b"set-cookie", b"x-api-key"];

/// The byte that replaces each byte of a credential's value, so that lengths
/// and the rest of the message stay as they were.
const MASK: u8 = b'*';

/// Overwrites the values of credential headers in an HTTP/1 payload prefix
/// (a value cut off at the end of the prefix is overwritten up to the end).
/// Payloads that are not HTTP text are left alone.
pub fn redact_credentials(payload: &mut [u8]) {
    let mut line_start = 0;
    while line_start < payload.len() {
        let line_end =
            payload[line_start..].iter().position(|&b| b == b'\n').map_or(payload.len(), |i| line_start + i);
        let line = &payload[line_start..line_end];
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = line[..colon].trim_ascii();
            if CREDENTIAL_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                let value_start = line_start + colon + 1;
                let value_end = if payload[..line_end].ends_with(b"\r") { line_end - 1 } else { line_end };
                for b in &mut payload[value_start..value_end] {
                    if *b != b' ' && *b != b'\t' {
                        *b = MASK;
                    }
                }
            }
        }
        line_start = line_end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(s: &str) -> String {
        let mut b = s.as_bytes().to_vec();
        redact_credentials(&mut b);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn credential_values_are_masked_and_nothing_else() {
        let req = "GET /a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc.def\r\ncookie: s=1; t=2\r\n\
                   traceparent: 00-4bf9-01\r\n\r\nbody: Authorization: no";
        let out = redacted(req);
        assert_eq!(out.len(), req.len());
        assert!(out.contains("Authorization: ****** *******\r\n"), "{out}");
        assert!(out.contains("cookie: **** ***\r\n"), "{out}");
        assert!(out.contains("Host: x\r\n") && out.contains("traceparent: 00-4bf9-01\r\n"), "{out}");
        assert!(!out.contains("abc") && !out.contains("s=1"));
    }

    #[test]
    fn a_value_cut_by_the_prefix_is_masked_to_the_end() {
        assert_eq!(
            redacted("HTTP/1.1 200 OK\r\nSet-Cookie: sess=12"),
            "HTTP/1.1 200 OK\r\nSet-Cookie: *******"
        );
        assert_eq!(redacted("Proxy-Authorization:Basic"), "Proxy-Authorization:*****");
    }

    #[test]
    fn binary_and_empty_payloads_are_left_alone() {
        let mut b = vec![0u8, 0xff, b':', b'\n', 7];
        let before = b.clone();
        redact_credentials(&mut b);
        assert_eq!(b, before);
        redact_credentials(&mut []);
    }
}
