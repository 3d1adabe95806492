//! Validation of the names that become parts of etcd keys.

/// Longest allowed stream id, region name or node id.
pub const MAX_NAME_LEN: usize = 128;

/// What kind of name is being checked, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A stream id.
    Stream,
    /// A region name.
    Region,
    /// A node id.
    Node,
}

impl NameKind {
    fn field(self) -> &'static str {
        match self {
            NameKind::Stream => "stream",
            NameKind::Region => "region",
            NameKind::Node => "node id",
        }
    }
}

/// A name that does not match `[A-Za-z0-9._~-]{1,128}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {shown:?}: {why}; allowed are 1 to 128 characters of A-Z a-z 0-9 . _ ~ -")]
pub struct InvalidName {
    field: &'static str,
    shown: String,
    why: &'static str,
}

/// Checks a stream id, region name or node id: `[A-Za-z0-9._~-]{1,128}`,
/// and not `.` or `..` (they would read as path steps in URLs).
pub fn validate(kind: NameKind, name: &str) -> Result<(), InvalidName> {
    let err = |why| InvalidName {
        field: kind.field(),
        // Show at most a prefix of hostile input.
        shown: name.chars().take(40).collect(),
        why,
    };
    if name.is_empty() {
        return Err(err("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(err("it is too long"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
    {
        return Err(err("it has a character that is not allowed"));
    }
    if name == "." || name == ".." {
        return Err(err("it is a path step"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_allowed_names() {
        for ok in ["a", "eu-west.1", "cam_01~hd", &"x".repeat(128)] {
            assert!(validate(NameKind::Stream, ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "a/b",
            "..",
            ".",
            "a b",
            "ü",
            "a\0",
            "a%2F",
            &"x".repeat(129),
            "a\nb",
        ] {
            let e = validate(NameKind::Region, bad).unwrap_err();
            assert!(e.to_string().contains("allowed are"), "{e}");
        }
    }
}
