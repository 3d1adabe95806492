//! `streams` (every live stream, a table) and `stream ID` (one stream's tree, indented).

use strata_proto::v1;

use super::table::{self, Align, Table, age};
use super::{CliError, Ctx, bounded};
use crate::dashboard::model::{self, StreamView, TreeNode};

/// Lists live streams, sorted by id.
pub(super) async fn list(mut ctx: Ctx<'_>) -> Result<(), CliError> {
    let mut client = v1::routing_service_client::RoutingServiceClient::new(ctx.channel.clone());
    let resp = bounded(client.list_streams(v1::ListStreamsRequest {})).await?;
    let mut streams: Vec<StreamView> = resp.streams.iter().filter_map(model::stream_view).collect();
    streams.sort_by(|a, b| a.id.cmp(&b.id));
    if ctx.json {
        return ctx.json(&streams);
    }
    if streams.is_empty() {
        writeln!(ctx.out, "no live streams")?;
        return Ok(());
    }
    ctx.out
        .write_all(streams_table(&streams, ctx.now_ms).as_bytes())?;
    Ok(())
}

/// Shows `stream`'s distribution tree.
pub(super) async fn show(mut ctx: Ctx<'_>, stream: &str) -> Result<(), CliError> {
    let mut client = v1::routing_service_client::RoutingServiceClient::new(ctx.channel.clone());
    let req = v1::GetStreamRequest {
        stream: stream.to_owned(),
    };
    let tree = bounded(client.get_stream(req)).await?;
    let view = model::stream_view(&tree).ok_or_else(|| {
        CliError::Unexpected(format!("stream {stream:?} came without a main origin"))
    })?;
    if ctx.json {
        return ctx.json(&view);
    }
    ctx.out
        .write_all(stream_text(&view, ctx.now_ms).as_bytes())?;
    // Which publisher is live: the main origin's; the backup waits on the standby.
    match &tree.standby {
        Some(b) => writeln!(
            ctx.out,
            "live publisher on {}; backup publisher (standby) on {} ({})",
            view.main.node, b.node_id, b.region
        )?,
        None => writeln!(
            ctx.out,
            "live publisher on {}; no backup publisher",
            view.main.node
        )?,
    }
    Ok(())
}

/// `streams` as a table.
pub fn streams_table(streams: &[StreamView], now_ms: i64) -> String {
    let mut t = Table::new(&[
        ("STREAM", Align::Left),
        ("MAIN ORIGIN", Align::Left),
        ("REGIONS", Align::Left),
        ("NODES", Align::Right),
        ("SUBSCRIBERS", Align::Right),
        ("LIVE", Align::Right),
    ]);
    for s in streams {
        t.row(vec![
            s.id.clone(),
            format!("{} ({})", s.main.node, s.main.region),
            s.regions.join(","),
            s.node_count().to_string(),
            s.subscribers.len().to_string(),
            age(now_ms - s.main.started_at_ms),
        ]);
    }
    t.render()
}

/// `stream ID`: a summary line and the tree, one node per line.
pub fn stream_text(s: &StreamView, now_ms: i64) -> String {
    let mut out = format!(
        "stream {}: live {}, main origin {} ({}), {} {}, {} {}\n\n",
        s.id,
        age(now_ms - s.main.started_at_ms),
        s.main.node,
        s.main.region,
        s.regions.len(),
        if s.regions.len() == 1 {
            "region"
        } else {
            "regions"
        },
        s.node_count(),
        if s.node_count() == 1 { "node" } else { "nodes" },
    );
    let mut lines = Vec::new();
    flatten(&s.tree, "", "", &mut lines);
    if !s.detached.is_empty() {
        lines.push((String::new(), None));
        lines.push(("not connected to the main origin (moving):".into(), None));
        for d in &s.detached {
            flatten(d, "", "", &mut lines);
        }
    }
    let w = lines
        .iter()
        .map(|(l, _)| table::width(l))
        .max()
        .unwrap_or(0);
    for (label, node) in lines {
        let Some(n) = node else {
            out.push_str(label.trim_end());
            out.push('\n');
            continue;
        };
        let pad = " ".repeat(w - table::width(&label));
        let mut line = format!("{label}{pad}  {:<6}  {}", n.region, n.role.label());
        if let Some(e) = n.epoch {
            line.push_str(&format!("  epoch {e}"));
        }
        if let Some(link) = &n.link {
            line.push_str(&format!("  {}", link.label()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Tree lines: (`prefix + node id`, the node).
fn flatten<'a>(
    n: &'a TreeNode,
    lead: &str,
    child_lead: &str,
    lines: &mut Vec<(String, Option<&'a TreeNode>)>,
) {
    lines.push((format!("{lead}{}", n.node), Some(n)));
    let last = n.children.len().saturating_sub(1);
    for (i, c) in n.children.iter().enumerate() {
        let (branch, cont) = if i == last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        flatten(
            c,
            &format!("{child_lead}{branch}"),
            &format!("{child_lead}{cont}"),
            lines,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_is_indented_and_aligned() {
        // The dashboard's tree without its detached node, 65 s after it started.
        let mut msg = model::tests::tree_msg();
        msg.subscribers.retain(|s| s.upstream_node_id != "gone");
        let view = model::stream_view(&msg).unwrap();
        let text = stream_text(&view, 65_001);
        let want = "stream demo: live 1m05s, main origin eu-1 (eu), 2 regions, 4 nodes\n\n\
                    eu-1        eu      main origin  epoch 7\n\
                    ├─ eu-2     eu      edge\n\
                    └─ us-1     us      regional origin  epoch 9\n\
                    \u{20}  └─ us-2  us      edge\n";
        assert_eq!(text, want, "\n{text}");
    }

    #[test]
    fn tree_shows_each_regions_link_cost() {
        let view = model::stream_view(&model::tests::chain_msg()).unwrap();
        let text = stream_text(&view, 65_001);
        let want = "stream demo: live 1m05s, main origin eu-1 (eu), 3 regions, 3 nodes\n\n\
                    eu-1         eu      main origin  epoch 7\n\
                    └─ use-1     use     regional origin  epoch 9  link 40 ms pinned, path 40 ms\n\
                    \u{20}  └─ usw-1  usw     regional origin  epoch 11  link 15 ms measured, path 55 ms\n";
        assert_eq!(text, want, "\n{text}");
    }
}
