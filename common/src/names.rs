//! The rule for stream ids, region names and node ids: `[A-Za-z0-9._~-]{1,128}`,
//! and not `.` or `..`. These names become parts of etcd keys and URL path
//! segments, so the control plane and the node must agree on them.

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

/// Whether `b` may appear in a name: `A-Z a-z 0-9 . _ ~ -`.
pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-')
}

/// Whether `name` follows the rule of [`validate`].
pub fn is_valid(name: &str) -> bool {
    problem(name).is_none()
}

/// Checks a stream id, region name or node id: `[A-Za-z0-9._~-]{1,128}`,
/// and not `.` or `..` (they would read as path steps in URLs).
pub fn validate(kind: NameKind, name: &str) -> Result<(), InvalidName> {
    match problem(name) {
        None => Ok(()),
        Some(why) => Err(InvalidName {
            field: kind.field(),
            // Show at most a prefix of hostile input.
            shown: name.chars().take(40).collect(),
            why,
        }),
    }
}

/// What is wrong with `name`, if anything.
fn problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Some("it is too long");
    }
    if !name.bytes().all(is_name_byte) {
        return Some("it has a character that is not allowed");
    }
    if name == "." || name == ".." {
        return Some("it is a path step");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_allowed_names() {
        for ok in ["a", "eu-west.1", "cam_01~hd", &"x".repeat(128)] {
            assert!(validate(NameKind::Stream, ok).is_ok(), "{ok}");
            assert!(is_valid(ok), "{ok}");
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
            assert!(!is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn error_names_the_field_and_bounds_the_input() {
        let e = validate(NameKind::Node, &"/".repeat(1000)).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("invalid node id "), "{text}");
        assert!(text.len() < 200, "{text}");
    }

    #[test]
    fn name_bytes_are_letters_digits_and_four_marks() {
        let allowed: Vec<u8> = (0..=255u8).filter(|&b| is_name_byte(b)).collect();
        assert_eq!(allowed.len(), 26 + 26 + 10 + 4);
        for b in *b"._~-" {
            assert!(is_name_byte(b));
        }
    }
}
