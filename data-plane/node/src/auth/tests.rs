//! Unit tests of token verification, keys and redaction.

use super::*;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;

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
        backup: false,
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
fn token_redaction() {
    assert_eq!(
        redact_uri("/play/s?x=1&token=secret"),
        "/play/s?x=1&token=REDACTED"
    );
    assert_eq!(redact_uri("/play/s"), "/play/s");
}

#[test]
fn wildcards_match_whole_parts() {
    let k = keys();
    let grant = |sub: &str| {
        k.verify(
            &k.mint("k1", &claims(sub, Action::Play, 99)).expect("mint"),
            0,
        )
    };
    let g = grant("cam-1-*").expect("a prefix ending in a separator");
    assert!(g.allows("cam-1-hd", Action::Play).is_ok());
    assert!(g.allows("cam-1-", Action::Play).is_ok());
    assert_eq!(g.allows("cam-10", Action::Play), Err(Denied::WrongStream));
    assert_eq!(g.allows("cam-1", Action::Play), Err(Denied::WrongStream));
    for sep in ["cam.*", "cam_*", "cam~*", "cam-*"] {
        assert!(grant(sep).is_ok(), "{sep}");
    }
    // A wildcard in the middle of a part would silently widen the grant
    // (`cam-1*` covers `cam-10`): refused, and it matches nothing.
    for bad in ["cam-1*", "c*", "c*m", "**", "*-*", "cam-*x", "-*x"] {
        assert!(
            matches!(grant(bad), Err(TokenError::Malformed(_))),
            "{bad} was accepted"
        );
        assert!(!subject_matches(bad, "cam-10"), "{bad}");
        assert!(!valid_subject(bad), "{bad}");
    }
    assert!(subject_matches("*", "anything"));
    assert!(subject_matches("cam-1", "cam-1"));
    assert!(!subject_matches("cam-1", "cam-10"));
}

fn required(max_ttl_secs: u64) -> Auth {
    let source = KeySource {
        path: None,
        entries: Some(SecretString(format!("k1={}", STANDARD.encode(SECRET)))),
    };
    Auth::new(AuthMode::Required, source, max_ttl_secs).expect("auth")
}

#[test]
fn lifetime_is_bounded() {
    let auth = required(3600);
    let now = 1_000_000;
    let with = |iat: Option<u64>, exp: u64| {
        let mut c = claims("s", Action::Play, exp);
        c.iat = iat;
        keys().mint("k1", &c).expect("mint")
    };
    let check = |t: &str| auth.check(Some(t), "s", Action::Play, now);
    // Issued an hour ago, valid for another second: one hour and a second.
    assert_eq!(
        check(&with(Some(now - 3600), now + 1)),
        Err(AuthError::Unauthorized(TokenError::LifetimeTooLong))
    );
    assert!(check(&with(Some(now - 1800), now + 1800)).is_ok());
    // Without iat the lifetime counts from now.
    assert!(check(&with(None, now + 3600)).is_ok());
    assert_eq!(
        check(&with(None, now + 3601)),
        Err(AuthError::Unauthorized(TokenError::LifetimeTooLong))
    );
    // An iat in the future does not make a ten-year token short.
    assert_eq!(
        check(&with(Some(now + 315_360_000), now + 315_360_000 + 60)),
        Err(AuthError::Unauthorized(TokenError::LifetimeTooLong))
    );
    // A malformed iat is a malformed token.
    let bad = sign_raw(
        r#"{"alg":"HS256","kid":"k1"}"#,
        r#"{"sub":"s","act":"play","exp":1000010,"iat":"x"}"#,
    );
    assert!(matches!(
        check(&bad),
        Err(AuthError::Unauthorized(TokenError::Malformed(_)))
    ));
    // Open mode checks nothing.
    assert!(Auth::open().check(None, "s", Action::Play, now).is_ok());
}

#[test]
fn reload_replaces_keys_and_keeps_them_on_error() {
    let dir = std::env::temp_dir().join(format!(
        "strata-auth-reload-{}-{}",
        std::process::id(),
        unix_now()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("keys");
    let other: &[u8] = b"another-secret-another-secret-0123";
    std::fs::write(&file, format!("k1={}\n", STANDARD.encode(SECRET))).expect("write");
    let source = KeySource {
        path: Some(file.clone()),
        entries: None,
    };
    let auth = Auth::new(AuthMode::Required, source, 86_400).expect("auth");
    let mut new_keys = TokenKeys::new();
    new_keys.insert("k2", other).expect("key");
    let old_token = keys()
        .mint("k1", &claims("s", Action::Play, 100))
        .expect("mint");
    let new_token = new_keys
        .mint("k2", &claims("s", Action::Play, 100))
        .expect("mint");
    let ok = |t: &str| auth.check(Some(t), "s", Action::Play, 50).is_ok();
    assert!(ok(&old_token));
    assert!(!ok(&new_token));

    // Rotate: the file now holds only k2.
    std::fs::write(&file, format!("k2={}\n", STANDARD.encode(other))).expect("write");
    assert_eq!(auth.reload().expect("reload"), vec!["k2".to_owned()]);
    assert!(ok(&new_token));
    assert!(!ok(&old_token));
    // Clones (the node's state holds one) see the same keys.
    assert!(
        auth.clone()
            .check(Some(&new_token), "s", Action::Play, 50)
            .is_ok()
    );

    // A broken or empty file is refused and the keys in use stay.
    std::fs::write(&file, "k3=short\n").expect("write");
    assert!(matches!(auth.reload(), Err(KeyError::BadEntry { .. })));
    std::fs::write(&file, "# nothing\n").expect("write");
    assert!(matches!(auth.reload(), Err(KeyError::NoKeys)));
    std::fs::remove_file(&file).expect("rm");
    assert!(matches!(auth.reload(), Err(KeyError::Io { .. })));
    assert!(ok(&new_token));
    assert_eq!(auth.kids(), vec!["k2".to_owned()]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_backup_role_needs_its_claim() {
    let auth = required(3600);
    let now = 1_000_000;
    let mint = |act: Action, backup: bool| {
        let mut c = claims("s", act, now + 60);
        c.backup = backup;
        keys().mint("k1", &c).expect("mint")
    };
    let backup = |t: &str| auth.check_backup(Some(t), "s", now);
    assert_eq!(backup(&mint(Action::Publish, true)), Ok(()));
    // A plain publish token publishes, but not as a backup: 403.
    let plain = mint(Action::Publish, false);
    assert_eq!(auth.check(Some(&plain), "s", Action::Publish, now), Ok(()));
    assert_eq!(
        backup(&plain),
        Err(AuthError::Forbidden(Denied::NoBackupRole))
    );
    // The claim does nothing on a play token, nor for another stream.
    assert_eq!(
        backup(&mint(Action::Play, true)),
        Err(AuthError::Forbidden(Denied::WrongAction("publish")))
    );
    assert_eq!(
        auth.check_backup(Some(&mint(Action::Publish, true)), "t", now),
        Err(AuthError::Forbidden(Denied::WrongStream))
    );
    assert!(matches!(
        auth.check_backup(None, "s", now),
        Err(AuthError::Unauthorized(TokenError::Missing))
    ));
    // A hand-made token whose claim is not `true` grants nothing more.
    let odd = sign_raw(
        r#"{"alg":"HS256","kid":"k1"}"#,
        &format!(
            r#"{{"sub":"s","act":"publish","exp":{},"backup":"yes"}}"#,
            now + 60
        ),
    );
    assert!(backup(&odd).is_err());
}
