variable "aws_region_eu" {
  type        = string
  description = "AWS region of Strata region \"eu\", which also runs etcd and the control plane."
  default     = "eu-west-1"
}

variable "aws_region_us" {
  type        = string
  description = "AWS region of Strata region \"us\"."
  default     = "us-east-1"
}

variable "aws_region_ap" {
  type        = string
  description = "AWS region of Strata region \"ap\"."
  default     = "ap-southeast-1"
}

variable "networks" {
  type = map(object({
    vpc_id     = string
    subnet_ids = list(string)
  }))
  description = "VPC and subnets per Strata region (eu, us, ap). A region left out uses its AWS region's default VPC and default subnets. The subnets must be public (nodes have Elastic IPs; etcd and the control plane download packages)."
  default     = {}
}

variable "nodes_per_region" {
  type        = number
  description = "Number of strata-node instances in each region."
  default     = 2
}

variable "node_instance_type" {
  type        = string
  description = "EC2 instance type of the nodes. If it is not offered in every availability zone of a region, give that region's subnets in networks."
  default     = "c6i.large"
}

variable "control_plane_replicas" {
  type        = number
  description = "Number of strata-control replicas (in eu)."
  default     = 3
}

variable "certs_dir" {
  type        = string
  description = "Directory (relative to where terraform runs) holding ca.pem, REGION-N.pem / REGION-N.key for every node and CONTROL_PLANE_DNS_NAME.pem / .key for the control plane, made with `strata-node certs-init` and `certs-issue` (see docs/operations.md). ca.key is not read and never leaves your machine."
  default     = "certs"
}

variable "control_plane_dns_name" {
  type        = string
  description = "DNS name of the control plane (e.g. cp.example.net), a CNAME of its load balancer: the nodes dial https://NAME:7400 and check the control plane's certificate against NAME, so certs_dir must hold NAME.pem and NAME.key from `strata-node certs-issue --node-id NAME`."
}

variable "control_plane_route53_zone_id" {
  type        = string
  description = "Route 53 hosted zone (in the account of the eu provider) in which to create control_plane_dns_name as a CNAME of the load balancer; empty to create the record yourself (output control_plane_load_balancer)."
  default     = ""
}

variable "operator_tokens_file" {
  type        = string
  description = "File (relative to where terraform runs) with the operators' tokens for the control plane's gRPC API, `name=token` lines of 16 characters or more (see docs/operations.md). Written to every replica as /etc/strata/operator-tokens."
  default     = "operator-tokens"
}

variable "token_keys_file" {
  type        = string
  description = "File (relative to where terraform runs) with the nodes' publish/play token keys, `kid=base64secret` lines (see docs/operations.md). The nodes refuse to start without a key."
  default     = "token-keys"
}

variable "node_binary_url" {
  type        = string
  description = "URL of the strata-node binary (linux amd64) the nodes install."
}

variable "node_binary_sha256" {
  type        = string
  description = "SHA-256 of the binary at node_binary_url."
}

variable "control_binary_url" {
  type        = string
  description = "URL of the strata-control binary (linux amd64) the control-plane replicas install."
}

variable "control_binary_sha256" {
  type        = string
  description = "SHA-256 of the binary at control_binary_url."
}

variable "operator_cidrs" {
  type        = list(string)
  description = "Operators' networks: allowed to reach the control plane's gRPC API (grpcurl and strata-control, with an operator token), its /metrics, and SSH when key_names is set."
}

variable "key_names" {
  type        = map(string)
  description = "EC2 key pair name per Strata region (eu, us, ap) for SSH; a region left out gets no key and no SSH port."
  default     = {}
}

variable "public_url_template" {
  type        = string
  description = "Public URL of each node, with {id}, {ip} and {region} replaced; empty for http://{ip}:8080."
  default     = ""
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = { project = "strata" }
}
