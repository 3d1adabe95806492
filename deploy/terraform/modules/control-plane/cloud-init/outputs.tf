output "user_data" {
  description = "The rendered cloud-init user data (#cloud-config YAML)."
  value       = local.user_data
}

output "env" {
  description = "The variables written to /etc/strata/control.env."
  value       = local.env
}
