output "client_endpoints" {
  description = "etcd client URLs of every member, for strata-control's --etcd-endpoints."
  value       = [for ip in local.ips : "http://${ip}:${var.client_port}"]
}

output "members" {
  description = "Member name => private IPv4 address."
  value       = zipmap(local.names, local.ips)
}

output "instance_ids" {
  description = "EC2 instance id of every member, by member name."
  value       = zipmap(local.names, aws_instance.member[*].id)
}

output "security_group_id" {
  description = "Security group of the members."
  value       = aws_security_group.etcd.id
}
