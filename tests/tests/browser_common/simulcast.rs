//! The start the simulcast browser tests share: a cluster with r1-a (region r1) and r2-a
//! (region r2), Chromium publishing three layers on r1-a and a Chromium player on a clean
//! path, the driver held open.

use std::time::Duration;

use serde_json::Value;
use strata_tests::cluster::{Cluster, TestNode};
use tokio::process::Child;

use super::{DriverOutput, browser_tools, init, num, release_driver, run_driver_with_output};

/// Where the clean Chromium player plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayOn {
    /// r1-a, the publisher's node.
    R1a,
    /// r2-a, in the other region.
    R2a,
}

/// A running simulcast scenario.
pub struct Simulcast {
    pub cluster: Cluster,
    pub r1a: TestNode,
    pub r2a: TestNode,
    /// The held driver (publisher and clean player open until its stdin closes).
    pub child: Child,
    /// The driver's result line.
    pub res: Value,
    /// The rest of the driver's stdout, until taken.
    pub out: Option<DriverOutput>,
}

/// Starts the cluster and the driver: `/publish/{stream}` on r1-a until the publisher sends
/// at least 640 px wide (Chromium adds the upper layers as its estimate of the publishing
/// path grows), then `/play/{stream}` on `play_on` decoding 30 frames at the sent size.
pub async fn start_simulcast(stream: &str, play_on: PlayOn) -> Simulcast {
    init();
    let (node, driver) = browser_tools();
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let r1a = cluster.node("r1-a", "r1").await.unwrap();
    let r2a = cluster.node("r2-a", "r2").await.unwrap();
    let player = match play_on {
        PlayOn::R1a => &r1a,
        PlayOn::R2a => &r2a,
    };
    let (child, res, out) = run_driver_with_output(
        &node,
        &driver,
        &[
            "--publish",
            &format!("{}/publish/{stream}", r1a.http),
            "--min-publish-width",
            "640",
            "--play",
            &format!("{}/play/{stream}", player.http),
            "--frames",
            "30",
        ],
    )
    .await;
    assert!(num(&res, "/publish/finalWidth") >= 640.0, "{res}");
    Simulcast {
        cluster,
        r1a,
        r2a,
        child,
        res,
        out: Some(out),
    }
}

impl Simulcast {
    /// Closes the driver (and so the browser) and stops the nodes.
    pub async fn stop(self) {
        release_driver(self.child).await;
        for n in [self.r1a, self.r2a] {
            n.stop().await.unwrap();
        }
    }
}
