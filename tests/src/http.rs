//! A minimal HTTP/1.1 client for tests and tools: enough for WHIP, WHEP and
//! `/metrics` on loopback (one request per connection, `Content-Length`
//! bodies), with no extra dependency.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted.
const MAX_RESPONSE: usize = 4 << 20;

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The URL that answered (after a redirect, the target).
    pub url: String,
    /// Status code.
    pub status: u16,
    /// Headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The session a WHIP/WHEP POST created: its `Location`, resolved against the URL that
    /// answered when relative.
    pub fn session_url(&self) -> Result<String> {
        let location = self.header("location").context("no Location")?;
        if location.starts_with("http") {
            return Ok(location.to_owned());
        }
        let (authority, _) = split_url(&self.url)?;
        Ok(format!("http://{authority}{location}"))
    }
}

/// Splits `http://host:port/path` into (`host:port`, `/path`).
pub fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").context("only http:// URLs")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((authority.to_owned(), path.to_owned()))
}

/// Sends one request and reads the whole response (10 s deadline).
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response> {
    tokio::time::timeout(
        Duration::from_secs(10),
        request_inner(method, url, headers, body),
    )
    .await
    .with_context(|| format!("{method} {url} timed out"))?
}

async fn request_inner(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response> {
    let (authority, path) = split_url(url)?;
    let mut stream = TcpStream::connect(&authority)
        .await
        .with_context(|| format!("connecting {authority}"))?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            bail!("response over {MAX_RESPONSE} bytes");
        }
    }
    let mut resp = parse(&buf)?;
    resp.url = url.to_owned();
    Ok(resp)
}

fn parse(buf: &[u8]) -> Result<Response> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&buf[..end]).context("headers not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("empty response")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut headers = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let mut body = buf[end + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body)?;
    } else if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Ok(Response {
        url: String::new(),
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size_txt = std::str::from_utf8(&b[..eol])?
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let size = usize::from_str_radix(&size_txt, 16)?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(b.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// GET a URL.
pub async fn get(url: &str) -> Result<Response> {
    request("GET", url, &[], &[]).await
}

/// POST an SDP offer (WHIP/WHEP); follows one 307 redirect like a WHIP client.
pub async fn post_sdp(url: &str, offer: &str) -> Result<Response> {
    let headers = [("Content-Type", "application/sdp")];
    let resp = request("POST", url, &headers, offer.as_bytes()).await?;
    if resp.status == 307
        && let Some(loc) = resp.header("location")
    {
        let loc = loc.to_owned();
        return request("POST", &loc, &headers, offer.as_bytes()).await;
    }
    Ok(resp)
}

/// Sums a Prometheus metric's samples whose labels contain every `label="value"` given.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}
