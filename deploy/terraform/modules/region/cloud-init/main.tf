# Renders the cloud-init user data of one strata-node instance: a `strata` system user, the
# release binary (downloaded and checked by strata-fetch), the systemd unit from
# deploy/systemd, /etc/strata/node.env, the node's certificates and the token keys.

locals {
  env = merge(
    {
      STRATA_NODE_ID         = var.node_id
      STRATA_REGION          = var.region
      STRATA_HTTP_LISTEN     = "0.0.0.0:${var.http_port}"
      STRATA_PUBLIC_URL      = var.public_url
      STRATA_RELAY_LISTEN    = "0.0.0.0:${var.relay_port}"
      STRATA_RELAY_ADVERTISE = "${var.public_ip}:${var.relay_port}"
      STRATA_RTC_LISTEN      = "0.0.0.0:${var.rtc_port}"
      STRATA_ANNOUNCE_IPS    = var.public_ip
      STRATA_CONTROL_PLANE   = join(",", var.control_plane_endpoints)
      STRATA_CERTS_DIR       = "/etc/strata/certs"
      STRATA_CAPACITY        = tostring(var.capacity)
      STRATA_MAX_PUBLISHERS  = tostring(var.max_publishers)
      STRATA_DRAIN_TIMEOUT   = "${var.drain_timeout_seconds}s"
      STRATA_AUTH            = var.auth
      STRATA_TOKEN_KEYS_FILE = "/etc/strata/token-keys"
      RUST_LOG               = "info"
    },
    var.extra_env,
  )

  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    node_id       = var.node_id
    env           = local.env
    unit_b64      = filebase64("${path.module}/../../../../systemd/strata-node.service")
    fetch_b64     = filebase64("${path.module}/../../../../bin/strata-fetch")
    ca_b64        = base64encode(var.ca_cert_pem)
    cert_b64      = base64encode(var.node_cert_pem)
    key_b64       = base64encode(var.node_key_pem)
    tokens_b64    = base64encode(var.token_keys)
    binary_url    = var.binary_url
    binary_sha256 = var.binary_sha256
  })
}
