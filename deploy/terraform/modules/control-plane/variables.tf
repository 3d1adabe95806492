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
  description = "CIDR blocks allowed to reach the gRPC API: every node's public address (/32, from the region modules' public_ips) and the operators' networks. The API has no TLS and no authentication (anyone who reaches it can drain or deregister nodes), so keep this list tight."
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
