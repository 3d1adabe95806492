output "region" {
  description = "The Strata region name of these nodes."
  value       = var.region
}

output "node_ids" {
  description = "Node ids, in order (REGION-1 … REGION-N)."
  value       = local.node_ids
}

output "node_urls" {
  description = "Public base URL of every node, by node id (players: URL/play/STREAM, WHEP: URL/whep/STREAM)."
  value       = zipmap(local.node_ids, local.public_urls)
}

output "public_ips" {
  description = "Elastic IP of every node, in node order (for other regions' relay_allowed_cidrs and the control plane's grpc_allowed_cidrs)."
  value       = aws_eip.node[*].public_ip
}

output "relay_addresses" {
  description = "QUIC relay address (ip:port) of every node, by node id."
  value       = zipmap(local.node_ids, [for ip in aws_eip.node[*].public_ip : "${ip}:${var.relay_port}"])
}

output "instance_ids" {
  description = "EC2 instance id of every node, by node id."
  value       = zipmap(local.node_ids, aws_instance.node[*].id)
}

output "security_group_id" {
  description = "Security group of the nodes."
  value       = aws_security_group.node.id
}
