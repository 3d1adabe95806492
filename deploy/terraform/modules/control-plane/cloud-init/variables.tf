variable "replica_name" {
  type        = string
  description = "Name of the replica, for the comment at the top of the user data."
}

variable "grpc_port" {
  type        = number
  description = "TCP port of the gRPC listener (STRATA_LISTEN)."
}

variable "http_port" {
  type        = number
  description = "TCP port of the HTTP listener: /healthz and /metrics (STRATA_HTTP_LISTEN)."
}

variable "etcd_endpoints" {
  type        = list(string)
  description = "etcd client URLs, e.g. [\"http://10.0.1.200:2379\", …] (STRATA_ETCD_ENDPOINTS)."
}

variable "lease_ttl_seconds" {
  type        = number
  description = "Node lease time to live in whole seconds (STRATA_LEASE_TTL)."
}

variable "ca_cert_pem" {
  type        = string
  description = "PEM of the cluster CA certificate (ca.pem from `strata-node certs-init`): nodes' client certificates must chain to it (STRATA_CLIENT_CA)."
}

variable "tls_cert_pem" {
  type        = string
  description = "PEM certificate (chain) the gRPC server presents (STRATA_TLS_CERT), issued by the cluster CA for the DNS name the nodes dial (`strata-node certs-issue --node-id NAME`)."
}

variable "tls_key_pem" {
  type        = string
  description = "PEM private key of tls_cert_pem (STRATA_TLS_KEY), written root:strata 0640."
  sensitive   = true
}

variable "operator_tokens" {
  type        = string
  description = "Content of the operator token file (STRATA_OPERATOR_TOKENS): `name=token` lines, tokens of at least 16 characters. Written root:strata 0640."
  sensitive   = true
}

variable "binary_url" {
  type        = string
  description = "URL of the strata-control release binary (linux, the instance's architecture)."
}

variable "binary_sha256" {
  type        = string
  description = "SHA-256 (hex) of the binary at binary_url; the download is refused when it differs."
}

variable "extra_env" {
  type        = map(string)
  description = "More environment variables for /etc/strata/control.env (e.g. RUST_LOG); they override the ones this module sets."
  default     = {}
}
