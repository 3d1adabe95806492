# Renders the cloud-init user data of one strata-control instance: a `strata` system user, the
# release binary (downloaded and checked by strata-fetch), the systemd unit from
# deploy/systemd and /etc/strata/control.env.

locals {
  env = merge(
    {
      STRATA_LISTEN         = "0.0.0.0:${var.grpc_port}"
      STRATA_HTTP_LISTEN    = "0.0.0.0:${var.http_port}"
      STRATA_STORE          = "etcd"
      STRATA_ETCD_ENDPOINTS = join(",", var.etcd_endpoints)
      STRATA_LEASE_TTL      = "${var.lease_ttl_seconds}s"
      RUST_LOG              = "info"
    },
    var.extra_env,
  )

  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    replica_name  = var.replica_name
    env           = local.env
    unit_b64      = filebase64("${path.module}/../../../../systemd/strata-control.service")
    fetch_b64     = filebase64("${path.module}/../../../../bin/strata-fetch")
    binary_url    = var.binary_url
    binary_sha256 = var.binary_sha256
  })
}
