variable "node_id" {
  type        = string
  description = "Node id, unique in the cluster ([A-Za-z0-9.-], it is also the DNS name in the node's certificate)."
}

variable "region" {
  type        = string
  description = "Strata region of the node (STRATA_REGION)."
}

variable "public_ip" {
  type        = string
  description = "Public IPv4 address of the node: announced as the WebRTC host candidate and used as the relay address other nodes dial."
}

variable "public_url" {
  type        = string
  description = "Base URL players and publishers use to reach this node (STRATA_PUBLIC_URL)."
}

variable "http_port" {
  type        = number
  description = "TCP port of the node's HTTP listener (WHIP, WHEP, pages, /healthz, /metrics)."
}

variable "rtc_port" {
  type        = number
  description = "UDP port shared by every WebRTC session of the node."
}

variable "relay_port" {
  type        = number
  description = "UDP port of the node's QUIC relay server."
}

variable "control_plane_endpoints" {
  type        = list(string)
  description = "Control-plane gRPC endpoints, e.g. [\"https://cp.example.net:7400\"] (STRATA_CONTROL_PLANE); with https:// the node uses the CA and its own certificate from /etc/strata/certs."
}

variable "capacity" {
  type        = number
  description = "Most players (WHEP sessions) the node accepts (STRATA_CAPACITY)."
}

variable "max_publishers" {
  type        = number
  description = "Most publishers (WHIP sessions) the node accepts (STRATA_MAX_PUBLISHERS)."
}

variable "drain_timeout_seconds" {
  type        = number
  description = "Most seconds a graceful stop takes (STRATA_DRAIN_TIMEOUT). strata-node.service stops waiting after 30 s, so at most 20."
}

variable "ca_cert_pem" {
  type        = string
  description = "PEM of the cluster CA certificate (ca.pem from `strata-node certs-init`)."
}

variable "node_cert_pem" {
  type        = string
  description = "PEM of this node's certificate (NODE_ID.pem from `strata-node certs-issue`)."
}

variable "node_key_pem" {
  type        = string
  description = "PEM of this node's private key (NODE_ID.key from `strata-node certs-issue`)."
  sensitive   = true
}

variable "auth" {
  type        = string
  description = "Whether WHIP and WHEP need a token: \"required\" or \"open\" (STRATA_AUTH)."
}

variable "token_keys" {
  type        = string
  description = "Content of /etc/strata/token-keys (STRATA_TOKEN_KEYS_FILE): `kid=base64secret` lines. Empty only with auth = \"open\"."
  sensitive   = true
}

variable "binary_url" {
  type        = string
  description = "URL of the strata-node release binary (linux, the instance's architecture)."
}

variable "binary_sha256" {
  type        = string
  description = "SHA-256 (hex) of the binary at binary_url; the download is refused when it differs."
}

variable "extra_env" {
  type        = map(string)
  description = "More environment variables for /etc/strata/node.env (e.g. RUST_LOG); they override the ones this module sets."
  default     = {}
}
