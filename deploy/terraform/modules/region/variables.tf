variable "region" {
  type        = string
  description = "Strata region name of these nodes (e.g. \"eu\"); node ids are REGION-1 … REGION-N. Not the AWS region: that comes from the aws provider passed to the module."

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$", var.region))
    error_message = "The region name must match [A-Za-z0-9][A-Za-z0-9.-]{0,62}: it becomes part of node ids, which are DNS names in the node certificates."
  }
}

variable "node_count" {
  type        = number
  description = "Number of nodes in the region."
  default     = 2

  validation {
    condition     = var.node_count >= 1 && var.node_count == floor(var.node_count)
    error_message = "The node_count must be a whole number of at least 1."
  }
}

variable "instance_type" {
  type        = string
  description = "EC2 instance type of the nodes (the instance size). Network bandwidth matters more than CPU for a relay/SFU."
  default     = "c6i.large"
}

variable "ami_id" {
  type        = string
  description = "AMI of the nodes; empty for the newest official Debian 12 (bookworm) amd64 image. It must run cloud-init and systemd."
  default     = ""
}

variable "vpc_id" {
  type        = string
  description = "VPC the nodes run in."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Public subnets for the nodes (spread round-robin); the nodes get Elastic IPs, so the subnets need a route to an internet gateway."

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "Give at least one subnet."
  }
}

variable "key_name" {
  type        = string
  description = "EC2 key pair for SSH to the nodes; null for none."
  default     = null
}

variable "ssh_allowed_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to reach TCP 22 on the nodes (operators); empty to open no SSH port."
  default     = []
}

variable "ca_cert_pem" {
  type        = string
  description = "PEM of the cluster CA certificate (ca.pem from `strata-node certs-init`). Every node trusts exactly this CA, for the relay's mutual TLS and for the control plane's certificate."
}

variable "node_certificates" {
  type = map(object({
    cert_pem = string
    key_pem  = string
  }))
  description = "Certificate and private key PEM of every node, keyed by node id (REGION-1 … REGION-N), from `strata-node certs-issue --node-id ID --ip EIP --dns PUBLIC_HOST`: the control plane registers a node only if its relay address (the Elastic IP) and the host of its public URL are among its certificate's names, so allocate the Elastic IPs first (`terraform apply -target` on the `aws_eip` resources), then issue. The keys end up in the Terraform state and in the instances' user data: keep the state private."
  sensitive   = true
}

variable "auth" {
  type        = string
  description = "Whether WHIP and WHEP need a publish/play token: \"required\" (production) or \"open\" (anyone may publish and play; development only)."
  default     = "required"

  validation {
    condition     = contains(["required", "open"], var.auth)
    error_message = "The auth must be \"required\" or \"open\"."
  }
}

variable "token_keys" {
  type        = string
  description = "Token keys of the nodes: the content of a key file, `kid=base64secret` lines (several during a rotation; see docs/operations.md). Written to /etc/strata/token-keys. With auth = \"required\" the nodes refuse to start without a key; empty only with auth = \"open\". Ends up in the Terraform state and the user data."
  sensitive   = true
}

variable "control_plane_endpoints" {
  type        = list(string)
  description = "Control-plane gRPC endpoints the nodes use, e.g. [the control-plane module's grpc_endpoint]. https:// only: each node trusts only ca_cert_pem, checks that the control plane's certificate names the endpoint's host, and authenticates with its own certificate (its node id)."

  validation {
    condition     = length(var.control_plane_endpoints) > 0 && alltrue([for e in var.control_plane_endpoints : can(regex("^https://[^\\s,\"']+$", e))])
    error_message = "Give at least one endpoint, each an https:// URL without spaces, quotes or commas (plaintext http:// control planes are for local development only)."
  }
}

variable "public_url_template" {
  type        = string
  description = "Each node's public base URL (STRATA_PUBLIC_URL); {id}, {ip} and {region} are replaced by the node id, its Elastic IP and the region. Empty for http://{ip}:HTTP_PORT. DNS records and TLS termination for https:// URLs are not created by this module."
  default     = ""
}

variable "http_port" {
  type        = number
  description = "TCP port of the nodes' HTTP listener (WHIP, WHEP, pages, /healthz, /metrics)."
  default     = 8080
}

variable "rtc_port" {
  type        = number
  description = "UDP port of the nodes' WebRTC sessions (one port for all sessions)."
  default     = 8443
}

variable "relay_port" {
  type        = number
  description = "UDP port of the nodes' QUIC relay (node to node, mutual TLS)."
  default     = 4433
}

variable "http_allowed_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to reach the HTTP port (players, publishers, and whatever scrapes /metrics, which shares the port)."
  default     = ["0.0.0.0/0"]
}

variable "rtc_allowed_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to send WebRTC media to the rtc port (players and publishers)."
  default     = ["0.0.0.0/0"]
}

variable "relay_allowed_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to reach the QUIC relay port: the other nodes of every region. Open by default because nodes of other regions come from their Elastic IPs; the relay refuses peers without a certificate of the cluster CA. Narrow it to the other regions' public_ips (as /32) when you can."
  default     = ["0.0.0.0/0"]
}

variable "capacity" {
  type        = number
  description = "Most players (WHEP sessions) per node."
  default     = 500
}

variable "max_publishers" {
  type        = number
  description = "Most publishers (WHIP sessions) per node."
  default     = 100
}

variable "drain_timeout_seconds" {
  type        = number
  description = "Most seconds a node's graceful stop (drain) takes. strata-node.service allows 30 s to stop, so at most 20."
  default     = 10

  validation {
    condition     = var.drain_timeout_seconds >= 1 && var.drain_timeout_seconds <= 20
    error_message = "The drain_timeout_seconds must be between 1 and 20 (TimeoutStopSec=30 in strata-node.service leaves 10 s for deregistration and shutdown)."
  }
}

variable "binary_url" {
  type        = string
  description = "URL of the strata-node binary the instances install (linux amd64 for the default AMI). The project publishes no release artifacts yet: build with `cargo build --release -p strata-node` and host it yourself."

  validation {
    condition     = can(regex("^https?://[^\\s\"']+$", var.binary_url))
    error_message = "The binary_url must be an http:// or https:// URL without spaces or quotes."
  }
}

variable "binary_sha256" {
  type        = string
  description = "SHA-256 of the binary at binary_url (lowercase hex); instances refuse a download that differs."

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.binary_sha256))
    error_message = "The binary_sha256 must be 64 lowercase hex digits."
  }
}

variable "extra_env" {
  type        = map(string)
  description = "More variables for /etc/strata/node.env on every node (e.g. RUST_LOG = \"debug\")."
  default     = {}
}

variable "root_volume_size_gb" {
  type        = number
  description = "Size of each node's root volume in GiB (the node stores nothing; logs go to the journal)."
  default     = 16
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
