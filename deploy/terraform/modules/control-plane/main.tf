# strata-control: replica_count instances behind a network load balancer (TCP passthrough of
# gRPC; the target health check is HTTP /healthz, which answers 503 until the replica's cache
# has synced and whenever etcd is unreachable).
#
# gRPC is TLS end to end: the load balancer does not terminate it, so each replica presents
# the certificate issued for control_plane_dns_name and sees the nodes' client certificates
# itself (nodes are known by the certificate's DNS name, operators by their bearer token).
# /healthz and /metrics stay plain HTTP.
#
# The network load balancer keeps the client's address for instance targets, so the
# replicas' security group sees the nodes' and operators' own addresses: that is where the
# gRPC allow-list applies.
#
# User data and AMI changes are ignored on existing replicas (Terraform would otherwise
# replace them all at once): upgrade in place one at a time, see docs/operations.md.

locals {
  names  = [for i in range(var.replica_count) : "${var.name}-cp-${i + 1}"]
  ami_id = var.ami_id != "" ? var.ami_id : data.aws_ami.debian[0].id
  tags   = merge({ "strata:role" = "control-plane" }, var.tags)
}

data "aws_vpc" "this" {
  id = var.vpc_id
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

resource "aws_security_group" "control" {
  name_prefix = "${var.name}-cp-"
  description = "strata-control replicas"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-cp" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group_rule" "grpc" {
  count             = length(var.grpc_allowed_cidrs) > 0 ? 1 : 0
  security_group_id = aws_security_group.control.id
  description       = "gRPC from nodes and operators"
  type              = "ingress"
  protocol          = "tcp"
  from_port         = var.grpc_port
  to_port           = var.grpc_port
  cidr_blocks       = var.grpc_allowed_cidrs
}

resource "aws_security_group_rule" "health_from_vpc" {
  security_group_id = aws_security_group.control.id
  description       = "Load balancer health checks (/healthz)"
  type              = "ingress"
  protocol          = "tcp"
  from_port         = var.http_port
  to_port           = var.http_port
  cidr_blocks       = [data.aws_vpc.this.cidr_block]
}

resource "aws_security_group_rule" "http" {
  count             = length(var.http_allowed_cidrs) > 0 ? 1 : 0
  security_group_id = aws_security_group.control.id
  description       = "/healthz and /metrics from monitoring and operators"
  type              = "ingress"
  protocol          = "tcp"
  from_port         = var.http_port
  to_port           = var.http_port
  cidr_blocks       = var.http_allowed_cidrs
}

resource "aws_security_group_rule" "ssh" {
  count             = length(var.ssh_allowed_cidrs) > 0 ? 1 : 0
  security_group_id = aws_security_group.control.id
  description       = "SSH from operators"
  type              = "ingress"
  protocol          = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_blocks       = var.ssh_allowed_cidrs
}

resource "aws_security_group_rule" "egress" {
  security_group_id = aws_security_group.control.id
  description       = "Everything out: etcd, package mirrors, the binary"
  type              = "egress"
  protocol          = "-1"
  from_port         = 0
  to_port           = 0
  cidr_blocks       = ["0.0.0.0/0"]
}

module "cloud_init" {
  source = "./cloud-init"
  count  = var.replica_count

  replica_name      = local.names[count.index]
  grpc_port         = var.grpc_port
  http_port         = var.http_port
  etcd_endpoints    = var.etcd_endpoints
  lease_ttl_seconds = var.lease_ttl_seconds
  ca_cert_pem       = var.ca_cert_pem
  tls_cert_pem      = var.tls_cert_pem
  tls_key_pem       = var.tls_key_pem
  operator_tokens   = var.operator_tokens
  binary_url        = var.binary_url
  binary_sha256     = var.binary_sha256
  extra_env         = var.extra_env
}

resource "aws_instance" "replica" {
  count                       = var.replica_count
  ami                         = local.ami_id
  instance_type               = var.instance_type
  subnet_id                   = var.subnet_ids[count.index % length(var.subnet_ids)]
  vpc_security_group_ids      = [aws_security_group.control.id]
  associate_public_ip_address = var.associate_public_ip
  key_name                    = var.key_name
  user_data                   = module.cloud_init[count.index].user_data

  # IMDSv2 only: the user data (with the replica's key and the operator tokens) is readable
  # through the metadata service.
  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = 8
    encrypted   = true
  }

  tags = merge(local.tags, { Name = local.names[count.index] })

  lifecycle {
    ignore_changes = [ami, user_data]
  }
}

resource "aws_lb" "control" {
  name                             = "${var.name}-cp"
  load_balancer_type               = "network"
  internal                         = var.internal_load_balancer
  subnets                          = var.subnet_ids
  enable_cross_zone_load_balancing = true
  tags                             = local.tags
}

resource "aws_lb_target_group" "grpc" {
  name_prefix          = "scp-"
  port                 = var.grpc_port
  protocol             = "TCP"
  vpc_id               = var.vpc_id
  target_type          = "instance"
  deregistration_delay = 10
  tags                 = local.tags

  # /healthz: 200 when the replica's cache is in sync with etcd, 503 otherwise.
  health_check {
    protocol            = "HTTP"
    port                = tostring(var.http_port)
    path                = "/healthz"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_target_group_attachment" "grpc" {
  count            = var.replica_count
  target_group_arn = aws_lb_target_group.grpc.arn
  target_id        = aws_instance.replica[count.index].id
  port             = var.grpc_port
}

resource "aws_lb_listener" "grpc" {
  load_balancer_arn = aws_lb.control.arn
  port              = var.grpc_port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.grpc.arn
  }
}

# The name the nodes dial and the certificate names, when its zone is in Route 53.
resource "aws_route53_record" "control" {
  count   = var.route53_zone_id != "" ? 1 : 0
  zone_id = var.route53_zone_id
  name    = var.control_plane_dns_name
  type    = "CNAME"
  ttl     = 60
  records = [aws_lb.control.dns_name]
}
