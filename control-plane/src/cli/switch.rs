//! `switch STREAM`: the operator's switch to a stream's standby publisher.

use serde::Serialize;
use strata_proto::v1;

use super::{CliError, Ctx, bounded};

/// Switches `stream` to its standby and says which node is the main origin now.
pub(super) async fn run(mut ctx: Ctx<'_>, stream: &str) -> Result<(), CliError> {
    let mut client = v1::routing_service_client::RoutingServiceClient::new(ctx.channel.clone());
    let req = v1::SwitchPublisherRequest {
        stream: stream.to_owned(),
    };
    let answer = bounded(client.switch_publisher(req)).await?;
    let origin = answer.origin.unwrap_or_default();
    if ctx.json {
        return ctx.json(&Switched {
            stream,
            node: &origin.node_id,
            epoch: origin.epoch,
        });
    }
    writeln!(
        ctx.out,
        "{stream} is live from {} now (epoch {}); the publisher it replaced becomes the standby",
        origin.node_id, origin.epoch
    )?;
    Ok(())
}

/// The `--json` answer of `switch`.
#[derive(Serialize)]
struct Switched<'a> {
    stream: &'a str,
    node: &'a str,
    epoch: i64,
}
