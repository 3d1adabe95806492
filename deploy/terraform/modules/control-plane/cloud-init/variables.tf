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
