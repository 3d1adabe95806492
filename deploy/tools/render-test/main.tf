# Offline render test (scripts/check-deploy.sh): a root module without providers that renders
# the cloud-init user data of every role with Terraform itself (`terraform apply` here creates
# no resources, it only evaluates outputs). check_artifacts.py then parses the YAML and checks
# it against deploy/systemd and the binaries' flags.
#
# The "certificates", "keys", "token keys" and "operator tokens" below are marked test
# strings, not secrets.

terraform {
  required_version = ">= 1.0.0"
}

locals {
  etcd_members = {
    "strata-etcd-1" = "10.0.1.200"
    "strata-etcd-2" = "10.0.2.200"
    "strata-etcd-3" = "10.0.3.200"
  }
}

module "node" {
  source = "../../terraform/modules/region/cloud-init"

  node_id                 = "eu-1"
  region                  = "eu"
  public_ip               = "203.0.113.10"
  public_url              = "http://203.0.113.10:8080"
  http_port               = 8080
  rtc_port                = 8443
  relay_port              = 4433
  control_plane_endpoints = ["https://cp-a.example.net:7400", "https://cp-b.example.net:7400"]
  capacity                = 500
  max_publishers          = 100
  drain_timeout_seconds   = 10
  ca_cert_pem             = "-----BEGIN CERTIFICATE-----\nTEST CA, NOT A CERTIFICATE\n-----END CERTIFICATE-----\n"
  node_cert_pem           = "-----BEGIN CERTIFICATE-----\nTEST NODE, NOT A CERTIFICATE\n-----END CERTIFICATE-----\n"
  node_key_pem            = "-----BEGIN PRIVATE KEY-----\nTEST KEY, NOT A KEY\n-----END PRIVATE KEY-----\n"
  auth                    = "required"
  token_keys              = "# render test: no key here\n"
  binary_url              = "https://downloads.example.net/strata-node"
  binary_sha256           = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  extra_env               = { RUST_LOG = "info,strata_node=debug" }
}

module "control" {
  source = "../../terraform/modules/control-plane/cloud-init"

  replica_name      = "strata-cp-1"
  grpc_port         = 7400
  http_port         = 7401
  etcd_endpoints    = [for ip in values(local.etcd_members) : "http://${ip}:2379"]
  lease_ttl_seconds = 3
  ca_cert_pem       = "-----BEGIN CERTIFICATE-----\nTEST CA, NOT A CERTIFICATE\n-----END CERTIFICATE-----\n"
  tls_cert_pem      = "-----BEGIN CERTIFICATE-----\nTEST CONTROL PLANE, NOT A CERTIFICATE\n-----END CERTIFICATE-----\n"
  tls_key_pem       = "-----BEGIN PRIVATE KEY-----\nTEST KEY, NOT A KEY\n-----END PRIVATE KEY-----\n"
  operator_tokens   = "# render test: not a token\nalice=TEST-TOKEN-NOT-A-SECRET\n"
  binary_url        = "https://downloads.example.net/strata-control"
  binary_sha256     = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
}

module "etcd" {
  source   = "../../terraform/modules/etcd-cluster/cloud-init"
  for_each = local.etcd_members

  member_name     = each.key
  private_ip      = each.value
  initial_cluster = local.etcd_members
  cluster_token   = "strata-etcd"
  client_port     = 2379
  peer_port       = 2380
}

output "node_user_data" {
  description = "cloud-init of node eu-1."
  value       = module.node.user_data
  sensitive   = true
}

output "control_user_data" {
  description = "cloud-init of control-plane replica strata-cp-1."
  value       = module.control.user_data
  sensitive   = true
}

output "etcd_user_data" {
  description = "cloud-init of every etcd member, by member name."
  value       = { for name, m in module.etcd : name => m.user_data }
}
