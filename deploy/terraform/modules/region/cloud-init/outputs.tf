output "user_data" {
  description = "The rendered cloud-init user data (#cloud-config YAML). Sensitive: it carries the node's private key and the token keys."
  value       = local.user_data
  sensitive   = true
}

output "env" {
  description = "The variables written to /etc/strata/node.env."
  value       = local.env
}
