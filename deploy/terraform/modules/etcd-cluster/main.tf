# An etcd cluster for strata-control: member_count (3) Debian instances running Debian's
# etcd-server, bootstrapped statically on fixed private addresses, plain HTTP (strata-control
# has no etcd TLS options), reachable only from the control plane's security group.
#
# Members are long-lived: changes to their user data or AMI are ignored, because replacing a
# member's instance loses its data directory and a new instance would try to bootstrap a new
# cluster. Replace a failed member with etcdctl member remove/add (docs/operations.md).

locals {
  names = [for i in range(var.member_count) : "${var.name}-${i + 1}"]
  ips = length(var.member_private_ips) > 0 ? var.member_private_ips : [
    for i in range(var.member_count) : cidrhost(
      data.aws_subnet.member[i % length(var.subnet_ids)].cidr_block,
      var.private_ip_host_number + floor(i / length(var.subnet_ids)),
    )
  ]
  ami_id = var.ami_id != "" ? var.ami_id : data.aws_ami.debian[0].id
  tags   = merge({ "strata:role" = "etcd" }, var.tags)
}

data "aws_subnet" "member" {
  count = length(var.subnet_ids)
  id    = var.subnet_ids[count.index]
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

resource "aws_security_group" "etcd" {
  name_prefix = "${var.name}-"
  description = "etcd members of ${var.name}"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = var.name })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group_rule" "client_from_control_plane" {
  count                    = length(var.client_security_group_ids)
  security_group_id        = aws_security_group.etcd.id
  description              = "etcd clients: the control plane"
  type                     = "ingress"
  protocol                 = "tcp"
  from_port                = var.client_port
  to_port                  = var.client_port
  source_security_group_id = var.client_security_group_ids[count.index]
}

resource "aws_security_group_rule" "client_from_members" {
  security_group_id = aws_security_group.etcd.id
  description       = "etcd clients: etcdctl on the members"
  type              = "ingress"
  protocol          = "tcp"
  from_port         = var.client_port
  to_port           = var.client_port
  self              = true
}

resource "aws_security_group_rule" "peer" {
  security_group_id = aws_security_group.etcd.id
  description       = "etcd peers"
  type              = "ingress"
  protocol          = "tcp"
  from_port         = var.peer_port
  to_port           = var.peer_port
  self              = true
}

resource "aws_security_group_rule" "ssh" {
  count             = length(var.ssh_allowed_cidrs) > 0 ? 1 : 0
  security_group_id = aws_security_group.etcd.id
  description       = "SSH from operators"
  type              = "ingress"
  protocol          = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_blocks       = var.ssh_allowed_cidrs
}

resource "aws_security_group_rule" "egress" {
  security_group_id = aws_security_group.etcd.id
  description       = "Everything out: peers, package mirrors"
  type              = "egress"
  protocol          = "-1"
  from_port         = 0
  to_port           = 0
  cidr_blocks       = ["0.0.0.0/0"]
}

module "cloud_init" {
  source = "./cloud-init"
  count  = var.member_count

  member_name     = local.names[count.index]
  private_ip      = local.ips[count.index]
  initial_cluster = zipmap(local.names, local.ips)
  cluster_token   = var.name
  client_port     = var.client_port
  peer_port       = var.peer_port
}

resource "aws_instance" "member" {
  count                       = var.member_count
  ami                         = local.ami_id
  instance_type               = var.instance_type
  subnet_id                   = var.subnet_ids[count.index % length(var.subnet_ids)]
  private_ip                  = local.ips[count.index]
  vpc_security_group_ids      = [aws_security_group.etcd.id]
  associate_public_ip_address = var.associate_public_ip
  key_name                    = var.key_name
  user_data                   = module.cloud_init[count.index].user_data

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = var.root_volume_size_gb
    encrypted   = true
  }

  tags = merge(local.tags, { Name = local.names[count.index] })

  lifecycle {
    ignore_changes = [ami, user_data]
  }
}
