# One Strata region on AWS: node_count instances of strata-node, each with an Elastic IP (its
# announced WebRTC address and relay address) and one shared security group.
#
# Instances are bootstrapped once by cloud-init. Changes to the user data (binary URL, ports,
# certificates) are ignored on existing instances on purpose: Terraform would otherwise
# replace every node of the region at once. Upgrade nodes in place one at a time
# (docs/operations.md), or rebuild one with `terraform apply -replace=...`.

locals {
  node_ids = [for i in range(var.node_count) : "${var.region}-${i + 1}"]
  ami_id   = var.ami_id != "" ? var.ami_id : data.aws_ami.debian[0].id
  tags     = merge({ "strata:region" = var.region }, var.tags)
  public_urls = [
    for i, id in local.node_ids : (
      var.public_url_template == ""
      ? "http://${aws_eip.node[i].public_ip}:${var.http_port}"
      : replace(replace(replace(var.public_url_template, "{id}", id), "{ip}", aws_eip.node[i].public_ip), "{region}", var.region)
    )
  ]
}

data "aws_ami" "debian" {
  count       = var.ami_id == "" ? 1 : 0
  most_recent = true
  owners      = ["136693071363"] # Debian's official AMIs

  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

resource "aws_security_group" "node" {
  name_prefix = "strata-${var.region}-node-"
  description = "Strata nodes of region ${var.region}"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "strata-${var.region}-node" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group_rule" "http" {
  security_group_id = aws_security_group.node.id
  description       = "WHIP, WHEP, pages, /healthz, /metrics"
  type              = "ingress"
  protocol          = "tcp"
  from_port         = var.http_port
  to_port           = var.http_port
  cidr_blocks       = var.http_allowed_cidrs
}

resource "aws_security_group_rule" "rtc" {
  security_group_id = aws_security_group.node.id
  description       = "WebRTC media (one UDP port for every session)"
  type              = "ingress"
  protocol          = "udp"
  from_port         = var.rtc_port
  to_port           = var.rtc_port
  cidr_blocks       = var.rtc_allowed_cidrs
}

resource "aws_security_group_rule" "relay" {
  security_group_id = aws_security_group.node.id
  description       = "QUIC relay between nodes (mutual TLS)"
  type              = "ingress"
  protocol          = "udp"
  from_port         = var.relay_port
  to_port           = var.relay_port
  cidr_blocks       = var.relay_allowed_cidrs
}

resource "aws_security_group_rule" "ssh" {
  count             = length(var.ssh_allowed_cidrs) > 0 ? 1 : 0
  security_group_id = aws_security_group.node.id
  description       = "SSH from operators"
  type              = "ingress"
  protocol          = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_blocks       = var.ssh_allowed_cidrs
}

resource "aws_security_group_rule" "egress" {
  security_group_id = aws_security_group.node.id
  description       = "Everything out: control plane, other nodes, players, package mirrors, the binary"
  type              = "egress"
  protocol          = "-1"
  from_port         = 0
  to_port           = 0
  cidr_blocks       = ["0.0.0.0/0"]
}

# Allocated before the instances so that each node's user data can name its public address.
resource "aws_eip" "node" {
  count  = var.node_count
  domain = "vpc"
  tags   = merge(local.tags, { Name = local.node_ids[count.index] })
}

module "cloud_init" {
  source = "./cloud-init"
  count  = var.node_count

  node_id                 = local.node_ids[count.index]
  region                  = var.region
  public_ip               = aws_eip.node[count.index].public_ip
  public_url              = local.public_urls[count.index]
  http_port               = var.http_port
  rtc_port                = var.rtc_port
  relay_port              = var.relay_port
  control_plane_endpoints = var.control_plane_endpoints
  capacity                = var.capacity
  max_publishers          = var.max_publishers
  drain_timeout_seconds   = var.drain_timeout_seconds
  ca_cert_pem             = var.ca_cert_pem
  node_cert_pem           = var.node_certificates[local.node_ids[count.index]].cert_pem
  node_key_pem            = var.node_certificates[local.node_ids[count.index]].key_pem
  auth                    = var.auth
  token_keys              = var.token_keys
  binary_url              = var.binary_url
  binary_sha256           = var.binary_sha256
  extra_env               = var.extra_env
}

resource "aws_instance" "node" {
  count                  = var.node_count
  ami                    = local.ami_id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_ids[count.index % length(var.subnet_ids)]
  vpc_security_group_ids = [aws_security_group.node.id]
  key_name               = var.key_name
  user_data              = module.cloud_init[count.index].user_data
  # A public address from the first boot (cloud-init downloads the binary), replaced by the
  # Elastic IP once it is associated.
  associate_public_ip_address = true

  # IMDSv2 only: the user data (with the node's key) is readable through the metadata service.
  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = var.root_volume_size_gb
    encrypted   = true
  }

  tags = merge(local.tags, { Name = local.node_ids[count.index], "strata:node-id" = local.node_ids[count.index] })

  lifecycle {
    ignore_changes = [ami, user_data]
  }
}

resource "aws_eip_association" "node" {
  count         = var.node_count
  allocation_id = aws_eip.node[count.index].id
  instance_id   = aws_instance.node[count.index].id
}
