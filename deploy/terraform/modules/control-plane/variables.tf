variable "name" {
  type        = string
  description = "Name prefix of the control plane's resources (the load balancer's name is NAME-cp, at most 32 characters)."
  default     = "strata"

  validation {
    condition     = can(regex("^[A-Za-z0-9-]{1,29}$", var.name))
    error_message = "The name must be 1 to 29 letters, digits or hyphens."
  }
}

variable "replica_count" {
  type        = number
  description = "Number of strata-control replicas behind the load balancer. Replicas are stateless; any one answers any request."
  default     = 3

  validation {
    condition     = var.replica_count >= 1 && var.replica_count == floor(var.replica_count)
    error_message = "The replica_count must be a whole number of at least 1."
  }
}

variable "instance_type" {
  type        = string
  description = "EC2 instance type of the replicas."
  default     = "t3.small"
}

variable "ami_id" {
  type        = string
  description = "AMI of the replicas; empty for the newest official Debian 12 (bookworm) amd64 image. It must run cloud-init and systemd."
  default     = ""
}

variable "vpc_id" {
  type        = string
  description = "VPC of the replicas and the load balancer (the etcd cluster's VPC)."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Subnets for the replicas (round-robin) and the network load balancer (one per availability zone). Public subnets unless internal_load_balancer is true."

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "Give at least one subnet."
  }
}

variable "internal_load_balancer" {
  type        = bool
  description = "Make the load balancer internal (private addresses only). Nodes in other VPCs then need peering or a transit gateway, which this module does not create."
  default     = false
}

variable "associate_public_ip" {
  type        = bool
  description = "Give replicas a public IPv4 address, for downloading the binary in subnets without NAT (such as a default VPC). Inbound traffic is still limited by the security group."
  default     = true
}

variable "etcd_endpoints" {
  type        = list(string)
  description = "etcd client URLs (the etcd-cluster module's client_endpoints)."

  validation {
    condition     = length(var.etcd_endpoints) > 0
    error_message = "Give at least one etcd endpoint."
  }
}

variable "grpc_port" {
  type        = number
  description = "TCP port of the gRPC API, on the replicas and on the load balancer."
  default     = 7400
}

variable "http_port" {
  type        = number
  description = "TCP port of /healthz and /metrics on the replicas (also the load balancer's health check)."
  default     = 7401
}

variable "grpc_allowed_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to reach the gRPC API: every node's public address (/32, from the region modules' public_ips) and the operators' networks. The API is served over TLS and authenticates every caller (nodes by client certificate, operators by token), but keep this list tight anyway: it is the cluster's control surface."
}

variable "control_plane_dns_name" {
  type        = string
  description = "DNS name the nodes and operators use for the control plane (e.g. cp.example.net), pointing at the load balancer (a CNAME of load_balancer_dns_name; created when route53_zone_id is set). The nodes check the replicas' certificate against it, so tls_cert_pem must be issued for this name: `strata-node certs-issue --node-id NAME --server-only`."

  validation {
    condition     = can(regex("^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$", var.control_plane_dns_name))
    error_message = "The control_plane_dns_name must be a fully qualified DNS name such as cp.example.net (letters, digits, hyphens and dots)."
  }
}

variable "route53_zone_id" {
  type        = string
  description = "Route 53 hosted zone in which to create control_plane_dns_name as a CNAME of the load balancer; empty to create no record (then point the name at load_balancer_dns_name yourself)."
  default     = ""
}

variable "ca_cert_pem" {
  type        = string
  description = "PEM of the cluster CA certificate (ca.pem from `strata-node certs-init`). The replicas accept node client certificates of this CA only; nodes and operators verify the replicas' certificate against it."

  validation {
    condition     = can(regex("-----BEGIN CERTIFICATE-----", var.ca_cert_pem))
    error_message = "The ca_cert_pem must be a PEM certificate."
  }
}

variable "tls_cert_pem" {
  type        = string
  description = "PEM certificate the replicas present on the gRPC port, issued by the cluster CA for control_plane_dns_name (`strata-node certs-issue --dir certs --node-id NAME --server-only --valid-for 397d` writes NAME.pem; server-only, so it can never act as a node). Every replica presents the same one."

  validation {
    condition     = can(regex("-----BEGIN CERTIFICATE-----", var.tls_cert_pem))
    error_message = "The tls_cert_pem must be a PEM certificate."
  }
}

variable "tls_key_pem" {
  type        = string
  description = "PEM private key of tls_cert_pem (NAME.key from `strata-node certs-issue`). It ends up in the Terraform state and in the instances' user data: keep the state private."
  sensitive   = true

  validation {
    condition     = can(regex("-----BEGIN [A-Z ]*PRIVATE KEY-----", var.tls_key_pem))
    error_message = "The tls_key_pem must be a PEM private key."
  }
}

variable "operator_tokens" {
  type        = string
  description = "Content of the operator token file (/etc/strata/operator-tokens, STRATA_OPERATOR_TOKENS): `name=token` lines, tokens of at least 16 characters; `#` starts a comment. Operators call with `authorization: Bearer TOKEN`. Ends up in the Terraform state and the user data."
  sensitive   = true

  validation {
    condition = length([
      for l in split("\n", var.operator_tokens) : l if can(regex("^\\s*[^#\\s]", l))
      ]) > 0 && alltrue([
      for l in split("\n", var.operator_tokens) : can(regex("^\\s*(#.*)?$|^[^=]*[^=\\s][^=]*=\\s*\\S.{14,}\\S\\s*$", l))
    ])
    error_message = "The operator_tokens must hold at least one `name=token` line, every token of 16 characters or more."
  }
}

variable "http_allowed_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to reach /healthz and /metrics on the replicas (Prometheus, operators). The VPC's own range is always allowed, for the load balancer's health checks."
  default     = []
}

variable "lease_ttl_seconds" {
  type        = number
  description = "Node lease time to live in seconds (--lease-ttl): how long a silent node stays registered."
  default     = 3

  validation {
    condition     = var.lease_ttl_seconds >= 1 && var.lease_ttl_seconds == floor(var.lease_ttl_seconds)
    error_message = "The lease_ttl_seconds must be a whole number of at least 1 (etcd leases have whole seconds)."
  }
}

variable "binary_url" {
  type        = string
  description = "URL of the strata-control binary the instances install (linux amd64 for the default AMI). The project publishes no release artifacts yet: build with `cargo build --release -p strata-control` and host it yourself."

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
  description = "More variables for /etc/strata/control.env on every replica (e.g. STRATA_PREFIX, RUST_LOG)."
  default     = {}
}

variable "key_name" {
  type        = string
  description = "EC2 key pair for SSH to the replicas; null for none."
  default     = null
}

variable "ssh_allowed_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to reach TCP 22 on the replicas; empty to open no SSH port."
  default     = []
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
