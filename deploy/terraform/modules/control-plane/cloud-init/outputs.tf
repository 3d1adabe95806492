output "user_data" {
  description = "The rendered cloud-init user data (#cloud-config YAML). Sensitive: it carries the replica's private key and the operator tokens."
  value       = local.user_data
  sensitive   = true
}

output "env" {
  description = "The variables written to /etc/strata/control.env."
  value       = local.env
}
