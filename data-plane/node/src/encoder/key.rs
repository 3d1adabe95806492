//! What an RTMP publisher names: the application (`live`) and the stream
//! key, which carries the stream and its publish token.

/// The only RTMP application: `rtmp://NODE/live/{stream}`.
pub const APP: &str = "live";

/// The stream and token an RTMP stream key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKey<'a> {
    /// `{stream}` or `{stream}?token=…&role=…` (other query parameters are
    /// ignored).
    Named {
        /// The stream name (not yet checked against the name rule).
        stream: &'a str,
        /// The publish token, if the key has one.
        token: Option<&'a str>,
        /// The query (`token=…&role=backup`), if any.
        query: Option<&'a str>,
    },
    /// The key is a publish token itself (a JWT): the stream is its subject.
    Token(&'a str),
}

/// Splits a stream key. A key of three base64url parts whose first starts
/// like a JSON object (`eyJ`) is a token: no stream name looks like that.
pub fn parse(key: &str) -> StreamKey<'_> {
    let (name, query) = match key.split_once('?') {
        Some((n, q)) => (n, Some(q)),
        None => (key, None),
    };
    if query.is_none() && looks_like_jwt(name) {
        return StreamKey::Token(name);
    }
    let token = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .filter(|t| !t.is_empty())
    });
    StreamKey::Named {
        stream: name,
        token,
        query,
    }
}

fn looks_like_jwt(s: &str) -> bool {
    s.starts_with("eyJ")
        && s.split('.').count() == 3
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            parse("cam1"),
            StreamKey::Named {
                stream: "cam1",
                token: None,
                query: None
            }
        );
        assert_eq!(
            parse("cam1?token=abc.def.ghi&x=1"),
            StreamKey::Named {
                stream: "cam1",
                token: Some("abc.def.ghi"),
                query: Some("token=abc.def.ghi&x=1")
            }
        );
        assert_eq!(
            parse("cam1?x=1&token="),
            StreamKey::Named {
                stream: "cam1",
                token: None,
                query: Some("x=1&token=")
            }
        );
        assert_eq!(
            parse("eyJhbGci.eyJzdWIi.c2ln"),
            StreamKey::Token("eyJhbGci.eyJzdWIi.c2ln")
        );
        // A stream name with dots is a name.
        assert_eq!(
            parse("a.b.c"),
            StreamKey::Named {
                stream: "a.b.c",
                token: None,
                query: None
            }
        );
        assert_eq!(
            parse(""),
            StreamKey::Named {
                stream: "",
                token: None,
                query: None
            }
        );
        assert_eq!(
            parse("cam1?role=backup&token=t"),
            StreamKey::Named {
                stream: "cam1",
                token: Some("t"),
                query: Some("role=backup&token=t")
            }
        );
    }
}
