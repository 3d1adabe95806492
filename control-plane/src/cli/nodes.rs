//! `nodes [--region R]`: live nodes with their load.

use strata_proto::v1;

use super::table::{Align, Table, age, bitrate};
use super::{CliError, Ctx, bounded};
use crate::dashboard::model::{self, NodeView};

/// Lists live nodes (of `region`, if given), sorted by region and id.
pub(super) async fn run(mut ctx: Ctx<'_>, region: Option<&str>) -> Result<(), CliError> {
    let mut client = v1::node_service_client::NodeServiceClient::new(ctx.channel.clone());
    let req = v1::ListNodesRequest {
        region: region.unwrap_or_default().to_owned(),
    };
    let resp = bounded(client.list_nodes(req)).await?;
    let mut nodes: Vec<NodeView> = resp.nodes.iter().filter_map(model::node_view).collect();
    nodes.sort_by(|a, b| (&a.region, &a.id).cmp(&(&b.region, &b.id)));
    if ctx.json {
        return ctx.json(&nodes);
    }
    if nodes.is_empty() {
        writeln!(ctx.out, "no live nodes")?;
        return Ok(());
    }
    ctx.out
        .write_all(nodes_table(&nodes, ctx.now_ms).as_bytes())?;
    Ok(())
}

/// `nodes` as a table.
pub fn nodes_table(nodes: &[NodeView], now_ms: i64) -> String {
    let mut t = Table::new(&[
        ("REGION", Align::Left),
        ("ID", Align::Left),
        ("PLAYERS", Align::Right),
        ("STREAMS", Align::Right),
        ("EGRESS", Align::Right),
        ("CPU", Align::Right),
        ("DRAINING", Align::Left),
        ("AGE", Align::Right),
    ]);
    for n in nodes {
        let players = match (&n.load, n.capacity) {
            (Some(l), 0) => l.players.to_string(),
            (Some(l), cap) => format!("{}/{cap}", l.players),
            (None, _) => "-".into(),
        };
        let (streams, egress, cpu) = match &n.load {
            Some(l) => (
                l.streams.to_string(),
                bitrate(l.egress_bps),
                format!("{:.2}", l.cpu),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        t.row(vec![
            n.region.clone(),
            n.id.clone(),
            players,
            streams,
            egress,
            cpu,
            if n.draining { "yes" } else { "no" }.into(),
            age(now_ms - n.registered_at_ms),
        ]);
    }
    t.render()
}
