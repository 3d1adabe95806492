//! `drain NODE` and `undrain NODE`.

use serde::Serialize;
use strata_proto::v1;

use super::{CliError, Ctx, bounded};

/// Drains `node` (`draining`) or puts it back in service.
pub(super) async fn run(mut ctx: Ctx<'_>, node: &str, draining: bool) -> Result<(), CliError> {
    let mut client = v1::node_service_client::NodeServiceClient::new(ctx.channel.clone());
    let node_id = node.to_owned();
    if draining {
        bounded(client.drain(v1::DrainRequest { node_id })).await?;
    } else {
        bounded(client.undrain(v1::UndrainRequest { node_id })).await?;
    }
    if ctx.json {
        return ctx.json(&Drained { node, draining });
    }
    if draining {
        writeln!(
            ctx.out,
            "{node} is draining: it gets no new publishers or players, hands its regional \
             origins over and keeps serving what it has (until `undrain` or it leaves)"
        )?;
    } else {
        writeln!(
            ctx.out,
            "{node} is back in service: it takes new publishers and players again"
        )?;
    }
    Ok(())
}

/// The `--json` answer of `drain` and `undrain`.
#[derive(Serialize)]
struct Drained<'a> {
    node: &'a str,
    draining: bool,
}
