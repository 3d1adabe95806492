output "grpc_endpoint" {
  description = "The control plane's gRPC endpoint for the nodes' --control-plane (the region module's control_plane_endpoints) and the strata-control operator commands: https://control_plane_dns_name:PORT, the name the certificate is issued for."
  value       = "https://${var.control_plane_dns_name}:${var.grpc_port}"
}

output "grpc_address" {
  description = "HOST:PORT of the gRPC API for grpcurl (with -cacert ca.pem and an authorization: Bearer header)."
  value       = "${var.control_plane_dns_name}:${var.grpc_port}"
}

output "load_balancer_dns_name" {
  description = "DNS name of the network load balancer: control_plane_dns_name must be a CNAME of it (created by this module only when route53_zone_id is set)."
  value       = aws_lb.control.dns_name
}

output "replica_private_ips" {
  description = "Private IPv4 address of every replica, by replica name."
  value       = zipmap(local.names, aws_instance.replica[*].private_ip)
}

output "metrics_urls" {
  description = "/metrics URL of every replica (private addresses; scrape from inside the VPC or from http_allowed_cidrs via the public addresses)."
  value       = [for ip in aws_instance.replica[*].private_ip : "http://${ip}:${var.http_port}/metrics"]
}

output "instance_ids" {
  description = "EC2 instance id of every replica, by replica name."
  value       = zipmap(local.names, aws_instance.replica[*].id)
}

output "security_group_id" {
  description = "Security group of the replicas (give it to the etcd-cluster module's client_security_group_ids)."
  value       = aws_security_group.control.id
}
