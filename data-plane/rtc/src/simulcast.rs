//! Simulcast in a publisher's offer (RFC 8851 `a=rid`, RFC 8853 `a=simulcast`): which RTP
//! stream ids a media section sends, and which [`Layer`] each one is.
//!
//! Layers are named by the rid scheme the offer uses: `q`/`h`/`f` (quarter, half, full),
//! `l`/`m`/`h`, or `low`/`mid`/`high`. Any other names are taken in the order of the
//! `a=simulcast` line, lowest first (the `/publish` page lists them that way; so does the
//! order of `sendEncodings` in a browser).

use strata_media::Layer;

use crate::RtcError;

/// Most layers a publisher may send for one video.
pub const MAX_LAYERS: usize = 3;
/// Longest rid accepted (RFC 8851 sets no bound; real ones are a few characters).
const MAX_RID_LEN: usize = 16;

/// The layers a media section sends, `(rid, layer)` lowest first; empty when the section
/// does not send simulcast. `attributes` are the section's `a=` lines as (key, value).
pub(crate) fn send_layers<'a>(
    attributes: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<Vec<(String, Layer)>, RtcError> {
    let mut declared: Vec<&str> = Vec::new();
    let mut simulcast: Option<&str> = None;
    for (key, value) in attributes {
        match (key, value) {
            ("rid", Some(value)) => {
                let mut parts = value.split_whitespace();
                if let (Some(id), Some("send")) = (parts.next(), parts.next()) {
                    declared.push(id);
                }
            }
            ("simulcast", Some(value)) => {
                if simulcast.is_some() {
                    return Err(invalid("more than one a=simulcast line"));
                }
                simulcast = Some(value);
            }
            _ => {}
        }
    }
    let Some(simulcast) = simulcast else {
        return Ok(Vec::new());
    };
    let rids = send_list(simulcast)?;
    if rids.is_empty() {
        return Ok(Vec::new());
    }
    if rids.len() > MAX_LAYERS {
        return Err(invalid(&format!(
            "{} simulcast layers offered, at most {MAX_LAYERS} are accepted",
            rids.len()
        )));
    }
    for (i, rid) in rids.iter().enumerate() {
        if !valid_rid(rid) {
            return Err(invalid(
                "a simulcast rid is not 1-16 letters, digits, - or _",
            ));
        }
        if !declared.contains(rid) {
            return Err(invalid(
                "a=simulcast names a rid without an a=rid send line",
            ));
        }
        if rids[..i].contains(rid) {
            return Err(invalid("a=simulcast names a rid twice"));
        }
    }
    let layers = layers_for(&rids);
    let mut out: Vec<(String, Layer)> = rids
        .iter()
        .zip(layers)
        .map(|(rid, layer)| ((*rid).to_owned(), layer))
        .collect();
    out.sort_by_key(|(_, layer)| *layer);
    Ok(out)
}

/// The rids of the `send` direction: the first of each `;`-separated alternative list,
/// paused (`~`) ones included (they may resume).
fn send_list(value: &str) -> Result<Vec<&str>, RtcError> {
    let mut words = value.split_whitespace();
    while let Some(word) = words.next() {
        let list = words
            .next()
            .ok_or_else(|| invalid("a=simulcast direction without a list"))?;
        if word == "send" {
            return Ok(list
                .split(';')
                .filter_map(|alternatives| alternatives.split(',').next())
                .map(|rid| rid.trim_start_matches('~'))
                .collect());
        }
    }
    Ok(Vec::new())
}

fn valid_rid(rid: &str) -> bool {
    (1..=MAX_RID_LEN).contains(&rid.len())
        && rid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Layers for distinct rids, by naming scheme or else by position (lowest first).
fn layers_for(rids: &[&str]) -> Vec<Layer> {
    const SCHEMES: [[&str; 3]; 3] = [["q", "h", "f"], ["l", "m", "h"], ["low", "mid", "high"]];
    for scheme in SCHEMES {
        let named: Option<Vec<Layer>> = rids
            .iter()
            .map(|rid| {
                scheme
                    .iter()
                    .position(|name| name.eq_ignore_ascii_case(rid))
                    .map(|i| Layer::ALL[i])
            })
            .collect();
        if let Some(named) = named {
            return named;
        }
    }
    let top = Layer::ALL.len() - 1;
    match rids.len() {
        1 => vec![Layer::High],
        2 => vec![Layer::Low, Layer::High],
        n => (0..n).map(|i| Layer::ALL[i.min(top)]).collect(),
    }
}

fn invalid(reason: &str) -> RtcError {
    RtcError::InvalidSdp(reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Vec<(String, Layer)>, RtcError> {
        let attrs: Vec<(&str, Option<&str>)> = lines
            .iter()
            .map(|l| match l.split_once(':') {
                Some((k, v)) => (k, Some(v)),
                None => (*l, None),
            })
            .collect();
        send_layers(attrs.into_iter())
    }

    fn names(layers: &[(String, Layer)]) -> Vec<(&str, Layer)> {
        layers.iter().map(|(r, l)| (r.as_str(), *l)).collect()
    }

    #[test]
    fn chromium_style_offer_gives_three_layers() {
        let layers = parse(&[
            "rid:h send",
            "rid:m send",
            "rid:l send",
            "simulcast:send h;m;l",
        ])
        .unwrap_or_default();
        assert_eq!(
            names(&layers),
            [("l", Layer::Low), ("m", Layer::Mid), ("h", Layer::High)]
        );
        let layers = parse(&["rid:q send", "rid:f send", "simulcast:send q;f"]).unwrap_or_default();
        assert_eq!(names(&layers), [("q", Layer::Low), ("f", Layer::High)]);
    }

    #[test]
    fn unknown_names_go_by_position() {
        let layers = parse(&[
            "rid:a send",
            "rid:b send",
            "rid:c send",
            "simulcast:send a;~b;c,x",
        ])
        .unwrap_or_default();
        assert_eq!(
            names(&layers),
            [("a", Layer::Low), ("b", Layer::Mid), ("c", Layer::High)]
        );
        let layers = parse(&["rid:a send", "rid:b send", "simulcast:send a;b"]).unwrap_or_default();
        assert_eq!(names(&layers), [("a", Layer::Low), ("b", Layer::High)]);
    }

    #[test]
    fn sections_without_simulcast_have_no_layers() {
        assert_eq!(parse(&["mid:0", "sendonly"]).map(|l| l.len()).ok(), Some(0));
        // Receive-only simulcast is not something a publisher sends.
        assert_eq!(
            parse(&["rid:a recv", "simulcast:recv a"])
                .map(|l| l.len())
                .ok(),
            Some(0)
        );
    }

    #[test]
    fn hostile_simulcast_lines_are_refused() {
        let four = [
            "rid:a send",
            "rid:b send",
            "rid:c send",
            "rid:d send",
            "simulcast:send a;b;c;d",
        ];
        for bad in [
            &four[..],
            &["rid:a send", "simulcast:send a;b"][..],
            &["rid:a send", "simulcast:send a;a"][..],
            &["rid:a send", "simulcast:send a", "simulcast:send a"][..],
            &["rid:a/b send", "simulcast:send a/b"][..],
            &[
                "rid:aaaaaaaaaaaaaaaaa send",
                "simulcast:send aaaaaaaaaaaaaaaaa",
            ][..],
            &["simulcast:send"][..],
        ] {
            assert!(
                matches!(parse(bad), Err(RtcError::InvalidSdp(_))),
                "{bad:?} must be refused"
            );
        }
    }
}
