# Renders the cloud-init user data of one strata-control instance: a `strata` system user, the
# release binary (downloaded and checked by strata-fetch), the systemd unit from
# deploy/systemd, /etc/strata/control.env, and what gRPC over TLS needs: the replica's
# certificate and key, the cluster CA and the operator tokens (the key and the tokens
# root:strata 0640).

locals {
  files = {
    tls_cert        = "/etc/strata/certs/cp.pem"
    tls_key         = "/etc/strata/certs/cp.key"
    client_ca       = "/etc/strata/certs/ca.pem"
    operator_tokens = "/etc/strata/operator-tokens"
  }

  env = merge(
    {
      STRATA_LISTEN          = "0.0.0.0:${var.grpc_port}"
      STRATA_HTTP_LISTEN     = "0.0.0.0:${var.http_port}"
      STRATA_STORE           = "etcd"
      STRATA_ETCD_ENDPOINTS  = join(",", var.etcd_endpoints)
      STRATA_LEASE_TTL       = "${var.lease_ttl_seconds}s"
      STRATA_TLS_CERT        = local.files.tls_cert
      STRATA_TLS_KEY         = local.files.tls_key
      STRATA_CLIENT_CA       = local.files.client_ca
      STRATA_OPERATOR_TOKENS = local.files.operator_tokens
      RUST_LOG               = "info"
    },
    var.extra_env,
  )

  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    replica_name  = var.replica_name
    env           = local.env
    files         = local.files
    unit_b64      = filebase64("${path.module}/../../../../systemd/strata-control.service")
    fetch_b64     = filebase64("${path.module}/../../../../bin/strata-fetch")
    ca_b64        = base64encode(var.ca_cert_pem)
    cert_b64      = base64encode(var.tls_cert_pem)
    key_b64       = base64encode(var.tls_key_pem)
    tokens_b64    = base64encode(var.operator_tokens)
    binary_url    = var.binary_url
    binary_sha256 = var.binary_sha256
  })
}
