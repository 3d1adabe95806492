# Strata in three AWS regions: etcd (3 members) and the control plane (3 replicas behind a
# network load balancer) in "eu", and nodes in "eu", "us" and "ap".
#
# Before `terraform apply`: build and host the two binaries, make the certificates
# (certs_dir: the cluster CA, every node's, and the control plane's for
# control_plane_dns_name), the token key file (token_keys_file) and the operator token file
# (operator_tokens_file), and fill in terraform.tfvars (see terraform.tfvars.example and
# docs/operations.md). This example has never been applied against AWS by the project;
# scripts/check-deploy.sh only checks it offline.
#
# Security notes:
# - The control plane's gRPC API is reached over the internet by the nodes of other regions.
#   It is served over TLS (the replicas' certificate is issued by the cluster CA for
#   control_plane_dns_name); nodes authenticate with their certificates, operators with a
#   bearer token from operator_tokens_file. It is also open only to the nodes' Elastic IPs
#   and operator_cidrs.
# - control_plane_dns_name must resolve to the load balancer: a CNAME of the output
#   control_plane_load_balancer, created here when control_plane_route53_zone_id is set.
#   Until it resolves, the nodes keep retrying to register.
# - Private keys (nodes', control plane's), token keys and operator tokens pass through the
#   Terraform state and the instances' user data.

locals {
  regions = ["eu", "us", "ap"]
  node_ids = {
    for r in local.regions : r => [for i in range(var.nodes_per_region) : "${r}-${i + 1}"]
  }
  ca_cert_pem = file("${var.certs_dir}/ca.pem")
  token_keys  = file(var.token_keys_file)
  # `strata-node certs-issue --dir CERTS_DIR --node-id CONTROL_PLANE_DNS_NAME` writes these.
  control_plane_cert_pem = file("${var.certs_dir}/${var.control_plane_dns_name}.pem")
  control_plane_key_pem  = file("${var.certs_dir}/${var.control_plane_dns_name}.key")
  operator_tokens        = file(var.operator_tokens_file)
  node_certificates = {
    for r in local.regions : r => {
      for id in local.node_ids[r] : id => {
        cert_pem = file("${var.certs_dir}/${id}.pem")
        key_pem  = file("${var.certs_dir}/${id}.key")
      }
    }
  }

  network = {
    eu = contains(keys(var.networks), "eu") ? var.networks["eu"] : { vpc_id = data.aws_vpc.eu[0].id, subnet_ids = data.aws_subnets.eu[0].ids }
    us = contains(keys(var.networks), "us") ? var.networks["us"] : { vpc_id = data.aws_vpc.us[0].id, subnet_ids = data.aws_subnets.us[0].ids }
    ap = contains(keys(var.networks), "ap") ? var.networks["ap"] : { vpc_id = data.aws_vpc.ap[0].id, subnet_ids = data.aws_subnets.ap[0].ids }
  }

  # Every node's Elastic IP as /32: the only sources (besides operators) of gRPC calls to the
  # control plane and of relay traffic between nodes.
  node_cidrs = [
    for ip in concat(module.region_eu.public_ips, module.region_us.public_ips, module.region_ap.public_ips) : "${ip}/32"
  ]
}

# --- Default networks (used for the regions not given in var.networks) ---------------------

data "aws_vpc" "eu" {
  count    = contains(keys(var.networks), "eu") ? 0 : 1
  provider = aws.eu
  default  = true
}

data "aws_subnets" "eu" {
  count    = contains(keys(var.networks), "eu") ? 0 : 1
  provider = aws.eu
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.eu[0].id]
  }
  filter {
    name   = "default-for-az"
    values = ["true"]
  }
}

data "aws_vpc" "us" {
  count    = contains(keys(var.networks), "us") ? 0 : 1
  provider = aws.us
  default  = true
}

data "aws_subnets" "us" {
  count    = contains(keys(var.networks), "us") ? 0 : 1
  provider = aws.us
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.us[0].id]
  }
  filter {
    name   = "default-for-az"
    values = ["true"]
  }
}

data "aws_vpc" "ap" {
  count    = contains(keys(var.networks), "ap") ? 0 : 1
  provider = aws.ap
  default  = true
}

data "aws_subnets" "ap" {
  count    = contains(keys(var.networks), "ap") ? 0 : 1
  provider = aws.ap
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.ap[0].id]
  }
  filter {
    name   = "default-for-az"
    values = ["true"]
  }
}

# --- etcd and the control plane (eu) ---------------------------------------------------------

module "etcd" {
  source    = "../../modules/etcd-cluster"
  providers = { aws = aws.eu }

  name                      = "strata-etcd"
  vpc_id                    = local.network.eu.vpc_id
  subnet_ids                = local.network.eu.subnet_ids
  client_security_group_ids = [module.control_plane.security_group_id]
  key_name                  = lookup(var.key_names, "eu", null)
  ssh_allowed_cidrs         = contains(keys(var.key_names), "eu") ? var.operator_cidrs : []
  tags                      = var.tags
}

module "control_plane" {
  source    = "../../modules/control-plane"
  providers = { aws = aws.eu }

  name                   = "strata"
  replica_count          = var.control_plane_replicas
  vpc_id                 = local.network.eu.vpc_id
  subnet_ids             = local.network.eu.subnet_ids
  etcd_endpoints         = module.etcd.client_endpoints
  control_plane_dns_name = var.control_plane_dns_name
  route53_zone_id        = var.control_plane_route53_zone_id
  ca_cert_pem            = local.ca_cert_pem
  tls_cert_pem           = local.control_plane_cert_pem
  tls_key_pem            = local.control_plane_key_pem
  operator_tokens        = local.operator_tokens
  grpc_allowed_cidrs     = concat(var.operator_cidrs, local.node_cidrs)
  http_allowed_cidrs     = var.operator_cidrs
  binary_url             = var.control_binary_url
  binary_sha256          = var.control_binary_sha256
  key_name               = lookup(var.key_names, "eu", null)
  ssh_allowed_cidrs      = contains(keys(var.key_names), "eu") ? var.operator_cidrs : []
  tags                   = var.tags
}

# --- Regions ------------------------------------------------------------------------------

module "region_eu" {
  source    = "../../modules/region"
  providers = { aws = aws.eu }

  region                  = "eu"
  node_count              = var.nodes_per_region
  instance_type           = var.node_instance_type
  vpc_id                  = local.network.eu.vpc_id
  subnet_ids              = local.network.eu.subnet_ids
  ca_cert_pem             = local.ca_cert_pem
  node_certificates       = local.node_certificates.eu
  token_keys              = local.token_keys
  control_plane_endpoints = [module.control_plane.grpc_endpoint]
  public_url_template     = var.public_url_template
  relay_allowed_cidrs     = local.node_cidrs
  binary_url              = var.node_binary_url
  binary_sha256           = var.node_binary_sha256
  key_name                = lookup(var.key_names, "eu", null)
  ssh_allowed_cidrs       = contains(keys(var.key_names), "eu") ? var.operator_cidrs : []
  tags                    = var.tags
}

module "region_us" {
  source    = "../../modules/region"
  providers = { aws = aws.us }

  region                  = "us"
  node_count              = var.nodes_per_region
  instance_type           = var.node_instance_type
  vpc_id                  = local.network.us.vpc_id
  subnet_ids              = local.network.us.subnet_ids
  ca_cert_pem             = local.ca_cert_pem
  node_certificates       = local.node_certificates.us
  token_keys              = local.token_keys
  control_plane_endpoints = [module.control_plane.grpc_endpoint]
  public_url_template     = var.public_url_template
  relay_allowed_cidrs     = local.node_cidrs
  binary_url              = var.node_binary_url
  binary_sha256           = var.node_binary_sha256
  key_name                = lookup(var.key_names, "us", null)
  ssh_allowed_cidrs       = contains(keys(var.key_names), "us") ? var.operator_cidrs : []
  tags                    = var.tags
}

module "region_ap" {
  source    = "../../modules/region"
  providers = { aws = aws.ap }

  region                  = "ap"
  node_count              = var.nodes_per_region
  instance_type           = var.node_instance_type
  vpc_id                  = local.network.ap.vpc_id
  subnet_ids              = local.network.ap.subnet_ids
  ca_cert_pem             = local.ca_cert_pem
  node_certificates       = local.node_certificates.ap
  token_keys              = local.token_keys
  control_plane_endpoints = [module.control_plane.grpc_endpoint]
  public_url_template     = var.public_url_template
  relay_allowed_cidrs     = local.node_cidrs
  binary_url              = var.node_binary_url
  binary_sha256           = var.node_binary_sha256
  key_name                = lookup(var.key_names, "ap", null)
  ssh_allowed_cidrs       = contains(keys(var.key_names), "ap") ? var.operator_cidrs : []
  tags                    = var.tags
}
