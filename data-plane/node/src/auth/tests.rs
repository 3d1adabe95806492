//! Unit tests of token verification, keys and redaction.

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn keys() -> TokenKeys {
    let mut k = TokenKeys::new();
    k.insert("k1", SECRET).expect("key");
    k
}

fn claims(sub: &str, act: Action, exp: u64) -> Claims {
    Claims {
        sub: sub.into(),
        act,
        exp,
        nbf: None,
        iat: None,
    }
}

fn sign_raw(header: &str, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(body)
    );
    let tag = hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

#[test]
fn round_trip_and_scope() {
    let k = keys();
    let t = k
        .mint("k1", &claims("cam-*", Action::Play, 1000))
        .expect("mint");
    let g = k.verify(&t, 900).expect("valid");
    assert_eq!(g.sub, "cam-*");
    assert!(g.allows("cam-1", Action::Play).is_ok());
    assert_eq!(g.allows("dog", Action::Play), Err(Denied::WrongStream));
    assert_eq!(
        g.allows("cam-1", Action::Publish),
        Err(Denied::WrongAction("publish"))
    );
    let exact = k
        .mint("k1", &claims("cam", Action::Publish, 1000))
        .expect("mint");
    let g = k.verify(&exact, 900).expect("valid");
    assert!(g.allows("cam", Action::Publish).is_ok());
    assert_eq!(g.allows("cam2", Action::Publish), Err(Denied::WrongStream));
    let all = k
        .mint("k1", &claims("*", Action::Play, 1000))
        .expect("mint");
    assert!(
        k.verify(&all, 0)
            .expect("valid")
            .allows("x", Action::Play)
            .is_ok()
    );
}

#[test]
fn time_bounds() {
    let k = keys();
    let t = k
        .mint("k1", &claims("s", Action::Play, 1000))
        .expect("mint");
    assert!(k.verify(&t, 1000 + LEEWAY_SECS - 1).is_ok());
    assert_eq!(k.verify(&t, 1000 + LEEWAY_SECS), Err(TokenError::Expired));
    let mut c = claims("s", Action::Play, 5000);
    c.nbf = Some(2000);
    let t = k.mint("k1", &c).expect("mint");
    assert_eq!(k.verify(&t, 1000), Err(TokenError::NotYetValid));
    assert!(k.verify(&t, 2000).is_ok());
    let no_exp = sign_raw(
        r#"{"alg":"HS256","kid":"k1"}"#,
        r#"{"sub":"s","act":"play"}"#,
    );
    assert!(matches!(
        k.verify(&no_exp, 0),
        Err(TokenError::Malformed(_))
    ));
    let float_exp = sign_raw(
        r#"{"alg":"HS256","kid":"k1"}"#,
        r#"{"sub":"s","act":"play","exp":1000.5}"#,
    );
    assert!(k.verify(&float_exp, 10).is_ok());
}

#[test]
fn hostile_tokens() {
    let k = keys();
    let good = k
        .mint("k1", &claims("s", Action::Play, 1000))
        .expect("mint");
    // Tampered claims keep the old signature.
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(r#"{"sub":"*","act":"publish","exp":99999}"#);
    parts[1] = &forged;
    assert_eq!(k.verify(&parts.join("."), 0), Err(TokenError::BadSignature));
    // alg none, unsigned.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
        URL_SAFE_NO_PAD.encode(r#"{"sub":"s","act":"play","exp":99999}"#)
    );
    assert_eq!(k.verify(&none, 0), Err(TokenError::UnsupportedAlgorithm));
    // Unknown and missing kid.
    let other = sign_raw(
        r#"{"alg":"HS256","kid":"k9"}"#,
        r#"{"sub":"s","act":"play","exp":9}"#,
    );
    assert_eq!(k.verify(&other, 0), Err(TokenError::UnknownKey));
    let nokid = sign_raw(r#"{"alg":"HS256"}"#, r#"{"sub":"s","act":"play","exp":9}"#);
    assert_eq!(k.verify(&nokid, 0), Err(TokenError::UnknownKey));
    // Path tricks and bad actions in claims.
    for body in [
        r#"{"sub":"../x","act":"play","exp":9}"#,
        r#"{"sub":"..","act":"play","exp":9}"#,
        r#"{"sub":".","act":"play","exp":9}"#,
        r#"{"sub":"a/b","act":"play","exp":9}"#,
        r#"{"sub":"","act":"play","exp":9}"#,
        r#"{"sub":"**","act":"play","exp":9}"#,
        r#"{"sub":"s","act":"admin","exp":9}"#,
        r#"{"sub":"s","act":"play","exp":-1}"#,
        r#"{"sub":"s","act":"play","exp":"9"}"#,
    ] {
        let t = sign_raw(r#"{"alg":"HS256","kid":"k1"}"#, body);
        assert!(
            matches!(k.verify(&t, 0), Err(TokenError::Malformed(_))),
            "{body}"
        );
    }
    for junk in [
        "",
        ".",
        "..",
        "a.b.c",
        "a.b.c.d",
        &"A".repeat(5000),
        "é.é.é",
    ] {
        assert!(k.verify(junk, 0).is_err(), "{junk}");
    }
}

#[test]
fn loads_and_redacts_keys() {
    let mut k = TokenKeys::new();
    let secret = STANDARD.encode(SECRET);
    k.add_entries(&format!(
        "# rotation\nold={secret}\nnew={secret}, x={secret}"
    ))
    .expect("entries");
    assert_eq!(k.len(), 3);
    let shown = format!("{k:?}");
    assert!(!shown.contains(&secret), "{shown}");
    assert!(matches!(
        TokenKeys::new().add_entries("k=c2hvcnQ="),
        Err(KeyError::BadEntry { .. })
    ));
    assert!(matches!(
        TokenKeys::new().add_entries(&format!("a={secret} a={secret}")),
        Err(KeyError::Duplicate(_))
    ));
    let e = TokenKeys::new()
        .add_entries("k=!!!notbase64!!!")
        .expect_err("bad");
    assert!(!e.to_string().contains("notbase64"));
    assert_eq!(format!("{:?}", SecretString("s3cret".into())), "<redacted>");
}

#[test]
fn bearer_and_redaction() {
    assert_eq!(bearer(Some("Bearer abc"), None), Some("abc"));
    assert_eq!(bearer(Some("bearer  abc "), Some("token=x")), Some("abc"));
    assert_eq!(bearer(Some("Basic abc"), Some("token=x")), None);
    assert_eq!(bearer(None, Some("a=1&token=xyz")), Some("xyz"));
    assert_eq!(bearer(None, Some("token=")), None);
    assert_eq!(
        redact_uri("/play/s?x=1&token=secret"),
        "/play/s?x=1&token=REDACTED"
    );
    assert_eq!(redact_uri("/play/s"), "/play/s");
}
