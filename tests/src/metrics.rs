//! Reading a node's Prometheus page, the way a scraper does.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

/// How long a scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of `GET /metrics` from the endpoint at `addr`; an answer other
/// than 200 is an error.
pub fn metrics_page(addr: &str) -> Result<String> {
    let mut stream =
        TcpStream::connect(addr).with_context(|| format!("connecting to metrics at {addr}"))?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    if !response.starts_with("HTTP/1.1 200") {
        bail!("metrics at {addr} answered:\n{response}");
    }
    let (_, body) = response
        .split_once("\r\n\r\n")
        .context("no body in the metrics response")?;
    Ok(body.to_string())
}

/// The samples of a page as `name{labels}` → value.
pub fn metric_samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// One sample (`name` with its labels, as the page prints it) from the
/// page of the endpoint at `addr`.
pub fn scrape_metric(addr: &str, name: &str) -> Result<f64> {
    metric_samples(&metrics_page(addr)?)
        .get(name)
        .copied()
        .with_context(|| format!("no {name} on the metrics page of {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_skip_comments_and_keep_labels() {
        let page = "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n\
                    b{op=\"put\",code=\"OK\"} 2\nc 1.5e-3\n\n";
        let samples = metric_samples(page);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples["a_total"], 3.0);
        assert_eq!(samples[r#"b{op="put",code="OK"}"#], 2.0);
        assert_eq!(samples["c"], 0.0015);
    }
}
