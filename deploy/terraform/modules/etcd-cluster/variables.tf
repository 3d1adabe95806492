variable "name" {
  type        = string
  description = "Name prefix of the cluster's resources; also the etcd initial-cluster token."
  default     = "strata-etcd"
}

variable "member_count" {
  type        = number
  description = "Number of etcd members: 3 (tolerates one failure) or 5 (tolerates two)."
  default     = 3

  validation {
    condition     = contains([3, 5], var.member_count)
    error_message = "The member_count must be 3 or 5."
  }
}

variable "instance_type" {
  type        = string
  description = "EC2 instance type of the members. etcd wants low disk latency more than CPU."
  default     = "t3.small"
}

variable "ami_id" {
  type        = string
  description = "AMI of the members; empty for the newest official Debian 12 (bookworm) amd64 image (etcd-server comes from Debian's archive)."
  default     = ""
}

variable "vpc_id" {
  type        = string
  description = "VPC the members run in."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Subnets for the members, spread round-robin (use one per availability zone). They need outbound internet access (public IP or NAT) to install etcd-server."

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "Give at least one subnet."
  }
}

variable "member_private_ips" {
  type        = list(string)
  description = "Fixed private IPv4 address of every member (member i in subnet i mod len(subnet_ids)); empty to take host number private_ip_host_number (+1 per extra member in the same subnet) of each subnet. The cluster bootstraps statically, so the addresses must be known before the instances exist."
  default     = []

  validation {
    condition     = length(var.member_private_ips) == 0 || length(var.member_private_ips) == 3 || length(var.member_private_ips) == 5
    error_message = "Give no address, or one per member (3 or 5)."
  }
}

variable "private_ip_host_number" {
  type        = number
  description = "Host number (cidrhost) of the members' addresses in their subnets when member_private_ips is empty. Pick one that nothing else in the subnets uses."
  default     = 200
}

variable "client_security_group_ids" {
  type        = list(string)
  description = "Security groups allowed to reach the etcd client port: the control plane's. Nothing else gets in (besides the members themselves)."
}

variable "client_port" {
  type        = number
  description = "etcd client port."
  default     = 2379
}

variable "peer_port" {
  type        = number
  description = "etcd peer port (members only)."
  default     = 2380
}

variable "key_name" {
  type        = string
  description = "EC2 key pair for SSH to the members; null for none."
  default     = null
}

variable "ssh_allowed_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to reach TCP 22 on the members; empty to open no SSH port."
  default     = []
}

variable "associate_public_ip" {
  type        = bool
  description = "Give members a public IPv4 address, for package downloads in subnets without NAT (such as a default VPC). Inbound traffic is still limited by the security group."
  default     = true
}

variable "root_volume_size_gb" {
  type        = number
  description = "Size of each member's root volume in GiB (it holds the etcd data directory)."
  default     = 20
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
